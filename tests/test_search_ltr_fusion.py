"""ltr_fusion serving helpers with known answers: cluster-hypothesis neighbour scores and routing by provenance."""

from __future__ import annotations

import threading

import numpy as np

from autooptimizer.search.dense_index import DenseIndex
from autooptimizer.search.rerankers.ltr_fusion import (
    FEATURES,
    Expert,
    ExpertParams,
    LtrFusionReranker,
    LtrParams,
    dense_extension,
    dominant_corpus,
    expert_features,
    neighbour_means,
    zscore,
)


def test_neighbour_means_is_the_similarity_weighted_mean_of_the_nearest_other_candidates() -> None:
    a, b = np.array([1.0, 0.0]), np.array([0.8, 0.6])
    vecs = np.stack([a, b, np.array([0.0, 1.0]), np.array([-1.0, 0.0])])
    scores = np.array([1.0, 2.0, 3.0, 4.0])
    (got,) = neighbour_means(vecs, [scores], k=2)
    # doc 0: nearest others are doc 1 (sim 0.8) and doc 2 (sim 0); doc 3 (sim -1) is not among them
    assert np.isclose(got[0], (0.8 * 2.0 + 0.0 * 3.0) / 0.8)
    # doc 1: doc 0 (0.8) and doc 2 (0.6)
    assert np.isclose(got[1], (0.8 * 1.0 + 0.6 * 3.0) / 1.4)
    # doc 3 is dissimilar to all: negative similarities count as zero, so its neighbour score is 0
    assert got[3] == 0.0
    assert [len(x) for x in neighbour_means(vecs[:1], [scores[:1]])] == [1]


def test_neighbour_means_equals_a_loop_over_each_candidates_k_nearest() -> None:
    """Against the definition, row by row, on 150 candidates."""
    rng = np.random.default_rng(5)
    vecs = rng.standard_normal((150, 24))
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    scores = [rng.standard_normal(150), rng.standard_normal(150)]
    got = neighbour_means(vecs, scores, k=10)
    sim = vecs @ vecs.T
    for i in range(150):
        others = [j for j in np.argsort(-sim[i], kind="stable") if j != i][:10]
        w = np.clip(sim[i, others], 0, None)
        for x, g in zip(scores, got, strict=True):
            assert np.isclose(g[i], (w * x[others]).sum() / (w.sum() + 1e-9), atol=1e-6)


def test_popularity_counts_the_feedback_queries_that_judged_a_document_relevant() -> None:
    p = ExpertParams(name="med-x", file="", weights={}, mem_docs=[["med/a", "med/b"], ["med/b"], ["med/c"]])
    ex = Expert(p, None, {"mem_q": np.eye(3, 2, dtype=np.float32)})
    ids = ["med/a", "med/b", "med/c", "med/d"]
    vecs = np.eye(4, 2)
    col = FEATURES.index("popularity")
    args = (np.array([1.0, 0.0]), ids, vecs, np.arange(4.0), np.zeros(4))
    assert np.allclose(expert_features(ex, *args)[:, col], zscore(np.log1p([1, 2, 1, 0])))
    # leave-one-out in training: memory query 1 (which judged b) does not count for itself
    assert np.allclose(expert_features(ex, *args, exclude_memory=1)[:, col], zscore(np.log1p([1, 1, 1, 0])))


def test_dominant_corpus_counts_the_top_candidates_and_breaks_ties_by_rank() -> None:
    assert dominant_corpus(["med/1", "scifact/2", "med/3"]) == "med"
    assert dominant_corpus(["scifact/9", "med/1"]) == "scifact"
    assert dominant_corpus(["med/1"] * 3 + ["cran/1"] * 20, top=3) == "med"


def _router(domains: list[str], gate_bias: float) -> LtrFusionReranker:
    rr = LtrFusionReranker.__new__(LtrFusionReranker)  # routing needs only the experts and the threshold
    p = ExpertParams(name="med-x", file="", weights={}, domains=domains, gate_bias=gate_bias)
    rr.params = LtrParams(experts=[p], fallback={})
    rr.experts = [Expert(p, None, {"gate_w": np.zeros(2, dtype=np.float32)})]
    rr._memo = threading.local()
    return rr


def test_routing_by_provenance_overrides_the_query_classifier() -> None:
    q = np.array([1.0, 0.0])
    owner = _router(["med"], gate_bias=-5.0)  # the classifier says "not med" (p ~ 0.007)
    assert owner.route(q, ["med/1", "med/2", "scifact/3"]) == 0, "its own corpus: served whatever the classifier says"
    assert owner.route(q, ["scifact/1", "scifact/2"]) is None
    claims_all = _router(["med"], gate_bias=5.0)  # the classifier would claim every query
    assert claims_all.route(q, ["scifact/1", "scifact/2", "med/3"]) is None, "another corpus: never"
    assert claims_all.route(q) == 0, "without candidates only the classifier is left"
    no_corpus = _router([], gate_bias=5.0)  # a shift inside the original corpus: the classifier decides
    assert no_corpus.route(q, ["scifact/1"]) == 0 and _router([], -5.0).route(q, ["scifact/1"]) is None


class _CountingEncoder:
    """Counts the query encodings a score makes (the champion makes exactly one per request)."""

    def __init__(self) -> None:
        self.calls = 0

    def encode(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        return np.ones((len(texts), 2), dtype=np.float32) / np.sqrt(2)


def _serving(domains: list[str], monkeypatch) -> tuple[LtrFusionReranker, _CountingEncoder, list[str]]:  # noqa: ANN001
    rr = _router(domains, gate_bias=-5.0)
    enc = _CountingEncoder()
    monkeypatch.setattr(LtrFusionReranker, "encoder", property(lambda self: enc))
    fallback_calls: list[str] = []

    def fallback(query: str, ids: list[str], bm: np.ndarray, rerank: object) -> np.ndarray:
        fallback_calls.append(query)  # the parent scores (and encodes) on its own, once
        return np.arange(len(ids), dtype=np.float64)

    monkeypatch.setattr(rr, "_fallback_scores", fallback)
    return rr, enc, fallback_calls


def test_a_query_provenance_sends_to_the_parent_is_not_encoded_again(monkeypatch) -> None:
    """Serving cost: on the original domain the challenger must cost what the champion costs. The query used to be
    encoded here for routing AND by the parent (2.0x the champion's time on SciFact, issue 16)."""
    rr, enc, parent = _serving(["med"], monkeypatch)
    rr.score("aspirin and stroke", ["scifact/1", "scifact/2", "med/3"], np.array([3.0, 2.0, 1.0]))
    assert (enc.calls, parent) == (0, ["aspirin and stroke"])


def test_a_query_gated_by_the_classifier_is_encoded_once_here(monkeypatch) -> None:
    rr, enc, parent = _serving([], monkeypatch)  # no corpus of its own: the classifier needs the query embedding
    rr.score("aspirin and stroke", ["scifact/1", "scifact/2"], np.array([2.0, 1.0]))
    assert (enc.calls, parent) == (1, ["aspirin and stroke"])


def test_rm3_tokenizes_a_document_once_and_gives_the_same_weights() -> None:
    """The feedback documents' term counts are cached per doc id; the expansion is what it was without a cache."""
    from autooptimizer.search.rerankers.ltr_fusion import Rm3

    class Bm25:
        vocab = {"alpha": 0, "beta": 1, "gamma": 2}
        calls = 0  # the feedback documents' term ties (beta vs gamma) must break by the term, as before

        def tokenize(self, text: str) -> list[str]:
            Bm25.calls += 1
            return text.split()

        class retriever:  # noqa: N801 - the bm25s attribute name
            scores = {"num_docs": 10, "indptr": [0, 1, 2, 3]}

    rm3 = Rm3(Bm25())
    docs = [("d/1", "alpha beta beta"), ("d/2", "gamma alpha")]
    first = rm3.expanded("alpha", docs, np.array([2.0, 1.0]), n_terms=2, lam=0.5)
    tokenized = Bm25.calls
    again = rm3.expanded("alpha", docs, np.array([2.0, 1.0]), n_terms=2, lam=0.5)
    assert again == first and Bm25.calls == tokenized + 1, "only the query is tokenized again"
    assert np.isclose(sum(first.values()), 1.0) and first["alpha"] > first["beta"] > 0


def test_dense_extension_adds_the_nearest_documents_bm25_missed_nearest_first() -> None:
    rows = np.array([3, 5, 8, 9, 12])
    vecs = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [0.6, 0.8], [-1.0, 0.0]])
    q = np.array([0.0, 1.0])  # cosines 0, 0.8, 1.0, 0.8, 0
    index = DenseIndex(rows, vecs)
    assert dense_extension(q, index, np.array([], dtype=np.int64), 3).tolist() == [8, 5, 9], "tie: lower row"
    assert dense_extension(q, index, np.array([8, 40]), 3).tolist() == [5, 9], "BM25 had 8: the top-3 less it"
    assert dense_extension(q, index, np.array([]), 0).tolist() == []
    assert dense_extension(q, index, np.array([]), 50).tolist() == [8, 5, 9, 3, 12], "k above the corpus: all"
    assert dense_extension(q, DenseIndex(rows[:0], vecs[:0]), np.array([]), 5).tolist() == []


class _Corpora:
    """Three documents of the original corpus far from the query, three of a new corpus near it."""

    doc_ids = ["orig/a", "orig/b", "orig/c", "dom/x", "dom/y", "dom/z"]
    index_of = {d: i for i, d in enumerate(doc_ids)}
    vecs = np.array([[1.0, 0.0], [0.9, 0.1], [0.8, 0.2], [0.6, 0.8], [0.7, 0.7], [0.8, 0.6]])

    def __len__(self) -> int:
        return len(self.doc_ids)


def _two_experts(monkeypatch, corpora: list[str]) -> LtrFusionReranker:  # noqa: ANN001
    """An expert owning `dom` and a query-gated one (a shift inside `orig`, trained on `corpora`) with 3 dense
    candidates, the classifier claiming every query."""
    owner = ExpertParams(name="dom-x", file="", weights={}, domains=["dom"])
    gated = ExpertParams(name="orig-y", file="", weights={}, gate_bias=50.0, dense_candidates=3,
                         dense_corpora=corpora)
    rr = LtrFusionReranker.__new__(LtrFusionReranker)
    rr.params = LtrParams(experts=[owner, gated], fallback={})
    rr.experts = [Expert(owner, None, {}), Expert(gated, None, {"gate_w": np.zeros(2, dtype=np.float32)})]
    rr.collection, rr._matrix = _Corpora(), _Corpora.vecs
    rr._own, rr._memo, rr._lock = {}, threading.local(), threading.Lock()
    enc = _CountingEncoder()
    monkeypatch.setattr(LtrFusionReranker, "encoder", property(lambda self: enc))
    return rr


def test_a_query_gated_expert_draws_dense_candidates_from_the_corpora_it_was_trained_on(monkeypatch) -> None:
    """Training drew the gated expert's dense candidates from its training collection (`orig`); serving holds every
    corpus. Drawn from all of them, a query with few BM25 hits got `dom` documents, whose owner then took the query
    at scoring (the dominant corpus of the first 10 changed): another expert scored the gated expert's list."""
    rr = _two_experts(monkeypatch, ["orig"])
    bm25_ids = ["orig/a", "orig/b"]
    more = rr.extra_candidates("coral bleaching", bm25_ids, np.array([0, 1]))
    ids = bm25_ids + [_Corpora.doc_ids[i] for i in more]
    assert ids == ["orig/a", "orig/b", "orig/c"], "the nearest of its own corpus that BM25 missed"
    q = rr.query_vector("coral bleaching")
    assert rr.route(q, bm25_ids) == rr.route(q, ids) == 1, "the expert that extended the list scores it"
    assert rr.own_index(1).rows.tolist() == [0, 1, 2]
    assert rr.extra_candidates("wing flutter", ["dom/x", "dom/y"], np.array([3, 4])).tolist() == [], \
        "routed to the owner, which has no dense candidates: BM25's only"
    # an expert recorded without corpora (hand-made) draws from every corpus, as documented
    assert _two_experts(monkeypatch, []).own_index(1).rows.tolist() == [0, 1, 2, 3, 4, 5]


def test_requests_racing_the_first_use_index_an_experts_corpus_once(monkeypatch) -> None:
    """Unwarmed, every request that found no index built its own (npl's graph: ~2 s each, one at a time under the
    build lock), the last request waiting for all of them; one builds, the others wait for it and get the same."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    from autooptimizer.search.rerankers import ltr_fusion

    built: list[int] = []

    class Slow(DenseIndex):
        def __init__(self, rows: np.ndarray, vecs: np.ndarray) -> None:
            built.append(len(rows))
            time.sleep(0.05)  # a graph build: long enough for the other requests to find no index yet
            super().__init__(rows, vecs)

    monkeypatch.setattr(ltr_fusion, "DenseIndex", Slow)
    rr = _two_experts(monkeypatch, ["orig"])
    start = threading.Barrier(4)

    def request(_: int) -> list[int]:
        start.wait()
        return rr.extra_candidates("coral bleaching", ["orig/a"], np.array([0])).tolist()

    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(request, range(4)))
    assert built == [3], "one index of the expert's 3 documents"
    assert got == [got[0]] * 4 and sorted(got[0]) == [1, 2]


def test_a_query_vector_is_reused_within_a_request_never_by_the_next(monkeypatch) -> None:
    """The candidate stage and the scorer share one encoding per request. Kept past the request, the memo served a
    replayed query with no forward pass, which neither `query_cache_off()` bypasses nor `encode_cached` counts: a
    serving-cost measurement read the challenger as cheaper and its evidence did not show it."""
    rr, enc, _ = _serving([], monkeypatch)
    ids, bm = ["scifact/1", "scifact/2"], np.array([2.0, 1.0])
    rr.query_vector("aspirin and stroke")  # the candidate stage (extra_candidates) encodes first
    rr.score("aspirin and stroke", ids, bm)
    assert enc.calls == 1, "one encoding for the whole request"
    rr.score("aspirin and stroke", ids, bm)
    assert enc.calls == 2, "the next request with the same query pays its own"
    rr.query_vector("statins")  # rerank_many: every query's candidates first, then one batch score
    rr.score_many(["statins"], [ids], [bm])
    rr.score("statins", ids, bm)
    assert enc.calls == 5, "the batch encodes its queries; the request after it encodes again"
