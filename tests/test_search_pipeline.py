"""Ranking pipeline on a 30-doc collection: BM25, MiniLM fusion, and the on-disk embedding cache."""

from __future__ import annotations

import numpy as np
import pytest

from autooptimizer.search import embeddings
from autooptimizer.search.beir import Collection, load_beir
from autooptimizer.search.encoder import get_encoder
from autooptimizer.search.metrics_eval import ndcg_at_10
from autooptimizer.search.model_store import ModelSpec
from autooptimizer.search.pipeline import SearchPipeline, fuse, zscore
from autooptimizer.search.sample_data import write_tiny_beir


@pytest.fixture
def collection(tmp_path):
    return Collection([load_beir(write_tiny_beir(tmp_path / "tiny"), name="tiny")])


def test_bm25_ranks_topic_documents_first(collection):
    pipe = SearchPipeline(ModelSpec(version="b", kind="bm25", fusion_weight=0.0), collection)
    hits = pipe.search("wing flutter supersonic flow", k=5)
    assert [h.doc_id.split("/")[1][:4] for h in hits[:3]] == ["wing"] * 3
    assert hits == sorted(hits, key=lambda h: -h.score)
    assert pipe.search("zzzz qqqq", k=5) == []  # nothing matches: no made-up hits
    assert any(p.name.endswith("bm25s-en-snowball-v1") for p in (pipe.bm25.cache_dir(collection).parent).iterdir())


def test_fused_pipeline_ranks_relevant_docs(collection):
    pipe = SearchPipeline(ModelSpec(version="f", fusion_weight=0.6, rerank_depth=20), collection).warm(progress=False)
    ds = collection.datasets["tiny"]
    run = pipe.run(ds.queries, k=10)
    assert set(run) == set(ds.queries) and all(3 <= len(r) <= 10 for r in run.values())
    for qid, ranking in run.items():  # every topic document outranks every other document
        assert all(d.startswith(f"tiny/{qid[2:]}") for d in list(ranking)[:5]), (qid, list(ranking))
    assert ndcg_at_10(run, collection.qrels("tiny")) > 0.75
    top = pipe.search("vaccine antibody response", k=3)
    assert all(h.doc_id.startswith("tiny/virus") for h in top)


def test_fusion_weight_extremes():
    bm = np.array([10.0, 5.0, 1.0])
    rr = np.array([0.1, 0.9, 0.5])
    assert np.argsort(-fuse(bm, rr, 0.0)).tolist() == [0, 1, 2]
    assert np.argsort(-fuse(bm, rr, 1.0)).tolist() == [1, 2, 0]
    assert zscore(np.array([3.0, 3.0])).tolist() == [0.0, 0.0]
    z = zscore(bm)
    assert z.mean() == pytest.approx(0.0) and z.std() == pytest.approx(1.0)


def test_embedding_cache_reused_across_loads_and_versions(collection, autoopt_home, monkeypatch):
    a = SearchPipeline(ModelSpec(version="a", fusion_weight=0.5), collection).warm(progress=False)
    first = a.reranker.matrix.copy()
    enc_id = get_encoder(None).identity
    shards = list((autoopt_home / "embeddings" / enc_id).glob("shard-*.npz"))
    assert shards, "embeddings are written to disk"
    assert embeddings.count_cached(collection, enc_id) == len(collection)

    embeddings._MATRICES.clear()  # as a new process would start
    calls = []
    enc = get_encoder(None)
    monkeypatch.setattr(enc, "encode", lambda texts, batch_size=32: calls.append(len(texts)) or np.zeros((0, 384)))
    b = SearchPipeline(ModelSpec(version="b", fusion_weight=0.8), collection).warm(progress=False)
    assert calls == [] and np.array_equal(b.reranker.matrix, first)  # second load encodes nothing


def test_new_documents_only_are_encoded(tmp_path, collection, monkeypatch):
    SearchPipeline(ModelSpec(version="a", fusion_weight=0.5), collection).warm(progress=False)
    extra = load_beir(write_tiny_beir(tmp_path / "more", topics=["soil"], docs_per_topic=2), name="more")
    bigger = Collection([collection.datasets["tiny"], extra])
    enc = get_encoder(None)
    real = enc.encode
    seen: list[int] = []
    monkeypatch.setattr(enc, "encode", lambda texts, batch_size=32: seen.append(len(texts)) or real(texts))
    SearchPipeline(ModelSpec(version="u", fusion_weight=0.5), bigger).warm(progress=False)
    assert seen == [2]


class _Clock:
    """A perf_counter that moves only when the stub encoder works: stage times are exact, not timed."""

    now = 100.0

    def __call__(self) -> float:
        return self.now


class _HybridReranker:
    """Adds one document to BM25's candidates and, like ltr_fusion, encodes the query for it (1 s on the clock)."""

    def __init__(self, clock: _Clock) -> None:
        self.clock = clock

    def warm(self, progress: bool = True) -> None: ...

    def _encode(self) -> None:
        from autooptimizer.search import stages

        self.clock.now += 1.0
        stages.add("encode", 1.0)  # what the encoder records for itself

    def extra_candidates(self, query: str, doc_ids: list[str], rows: np.ndarray) -> np.ndarray:
        self._encode()
        return np.array([max(set(range(30)) - set(rows.tolist()))], dtype=np.int64)

    def score(self, query: str, doc_ids: list[str], bm25_scores: np.ndarray) -> np.ndarray:
        self.clock.now += 0.25
        return np.arange(len(doc_ids), dtype=np.float64)


def test_a_first_stage_that_encodes_the_query_counts_it_under_encode_only(collection, monkeypatch):
    """Stages do not overlap (search/stages.py): the query encoding a hybrid first stage does (an ltr_fusion
    expert's dense candidates) is `encode`, not also `bm25`, as the reranker's is `encode`, not also `rerank`."""
    import time

    from autooptimizer.search import stages

    clock = _Clock()
    monkeypatch.setattr(time, "perf_counter", clock)
    pipe = SearchPipeline(ModelSpec(version="h", fusion_weight=1.0, rerank_depth=3), collection,
                          reranker=_HybridReranker(clock))  # type: ignore[arg-type]
    stages.begin()
    hits = pipe.search("wing flutter", k=3)
    spent = stages.end()
    assert hits[0].doc_id == collection.doc_ids[29], "the added document, scored best by the stub, is served"
    assert spent == {"bm25": 0.0, "encode": 1.0, "rerank": 0.25, "fusion": 0.0}
