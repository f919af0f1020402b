"""The ranking pipeline of one model version: BM25 top-`rerank_depth` -> reranker -> z-score fusion -> top-k.

fused = (1 - w) * z(bm25) + w * z(rerank), z over the candidate set. z-scores put BM25's unbounded scores and the
reranker's cosines on one scale, so the fusion weight means the same thing on every query.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
from pydantic import BaseModel

from autooptimizer.search import stages
from autooptimizer.search.beir import Collection
from autooptimizer.search.bm25 import BM25Index, top_rows
from autooptimizer.search.model_store import ModelSpec
from autooptimizer.search.rerankers import BatchReranker, Reranker, build_reranker

T = TypeVar("T")
# The steps `SearchPipeline.search` wraps with `call(operation, fn)`: the `operation` label values of the retries
# counter (the service exports each at 0 from start-up, so the first retry is an increase Prometheus can see).
OPERATIONS: tuple[str, ...] = ("bm25", "rerank")
Call = Callable[[str, Callable[[], Any]], Any]
Scored = tuple[list[str], np.ndarray, np.ndarray | None]  # candidates, BM25 scores, reranker scores (or None)
_BM25: dict[tuple[str, str], BM25Index] = {}
_BM25_LOCK = threading.Lock()


class Hit(BaseModel):
    doc_id: str
    score: float


def _direct(operation: str, fn: Callable[[], T]) -> T:
    return fn()


def get_bm25(collection: Collection) -> BM25Index:
    """One BM25 index per collection content per process (shared by stable and canary)."""
    key = (str(BM25Index.cache_dir(collection)), collection.content_hash())
    with _BM25_LOCK:
        if key not in _BM25:
            _BM25[key] = BM25Index(collection)
        return _BM25[key]


def zscore(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return x
    sd = x.std()
    return (x - x.mean()) / sd if sd > 1e-12 else np.zeros_like(x)


def fuse(bm25_scores: np.ndarray, rerank_scores: np.ndarray | None, weight: float) -> np.ndarray:
    if rerank_scores is None or weight <= 0.0:
        return np.asarray(bm25_scores, dtype=np.float64)
    return (1.0 - weight) * zscore(bm25_scores) + weight * zscore(rerank_scores)


def _rank(doc_ids: list[str], scores: np.ndarray, k: int) -> list[Hit]:
    order = sorted(range(len(doc_ids)), key=lambda i: (-scores[i], i))[:k]
    return [Hit(doc_id=doc_ids[i], score=float(scores[i])) for i in order]


class SearchPipeline:
    """Serve one ModelSpec over one Collection. Thread-safe for concurrent `search` calls."""

    def __init__(self, spec: ModelSpec, collection: Collection, reranker: Reranker | None = None) -> None:
        self.spec = spec
        self.collection = collection
        self.bm25 = get_bm25(collection)
        self.reranker = reranker or build_reranker(spec, collection)

    @property
    def version(self) -> str:
        return self.spec.version

    def warm(self, progress: bool = True) -> SearchPipeline:
        """One-time work before serving (e.g. embedding the corpus), so the first request is not slow."""
        if self.spec.fusion_weight > 0:
            self.reranker.warm(progress=progress)
        return self

    def candidates(self, query: str, depth: int) -> tuple[list[str], np.ndarray]:
        """BM25's top `depth` (first-stage order), then any documents the reranker adds for this query (a hybrid
        first stage: `extra_candidates(query, doc_ids, rows) -> rows`, e.g. an ltr_fusion expert's dense top-k),
        each with its BM25 score (0 when it shares no term with the query)."""
        scores = self.bm25.scores(query)
        idx = top_rows(scores, depth)
        ids = [self.collection.doc_ids[i] for i in idx]
        extend = getattr(self.reranker, "extra_candidates", None)
        if extend is not None and self.spec.fusion_weight > 0:
            more = extend(query, ids, idx)
            if len(more):
                idx = np.concatenate([idx, more])
                ids += [self.collection.doc_ids[i] for i in more]
        return ids, scores[idx]

    def search(self, query: str, k: int = 10, rerank_depth: int | None = None, call: Call = _direct) -> list[Hit]:
        """Top-k hits. `call(operation, fn)` wraps each step (the service passes its retrying, fault-aware caller).
        Each stage's time goes to the thread's stage clock when one runs (search/stages.py); a query encoding in the
        candidate stage (a hybrid first stage's) or the reranker counts as `encode` only, so stages do not overlap."""
        depth = max(rerank_depth or self.spec.rerank_depth, k)
        t0, encoded = time.perf_counter(), stages.recorded("encode")
        try:
            doc_ids, bm25_scores = call("bm25", lambda: self.candidates(query, depth))
        finally:
            stages.add("bm25", time.perf_counter() - t0 - (stages.recorded("encode") - encoded))
        rerank = None
        t0, encoded = time.perf_counter(), stages.recorded("encode")
        if self.spec.fusion_weight > 0 and doc_ids:
            rerank = call("rerank", lambda: self.reranker.score(query, doc_ids, bm25_scores))
            stages.count("reranked")
        else:  # the step still runs (as a no-op), so it is wrapped like any other: retries and faults apply
            call("rerank", lambda: None)
        stages.add("rerank", time.perf_counter() - t0 - (stages.recorded("encode") - encoded))
        with stages.timed("fusion"):
            return _rank(doc_ids, fuse(bm25_scores, rerank, self.spec.fusion_weight), k)

    def rerank_many(self, queries: dict[str, str], depth: int | None = None) -> dict[str, Scored]:
        """Candidates, BM25 scores and reranker scores per query; fuse them with any weight (grid search)."""
        depth = depth or self.spec.rerank_depth
        qids = list(queries)
        cands = [self.candidates(queries[q], depth) for q in qids]
        if self.spec.fusion_weight <= 0:
            return {q: (ids, s, None) for q, (ids, s) in zip(qids, cands, strict=True)}
        if isinstance(self.reranker, BatchReranker):
            rr = self.reranker.score_many([queries[q] for q in qids], [ids for ids, _ in cands])
        else:
            rr = [self.reranker.score(queries[q], ids, s) for q, (ids, s) in zip(qids, cands, strict=True)]
        return {q: (ids, s, r) for q, (ids, s), r in zip(qids, cands, rr, strict=True)}

    def run(self, queries: dict[str, str], k: int = 100, depth: int | None = None) -> dict[str, dict[str, float]]:
        """Batch ranking for offline evaluation: {qid: {doc_id: score}} with collection doc ids."""
        out: dict[str, dict[str, float]] = {}
        for qid, (ids, bm, rr) in self.rerank_many(queries, depth).items():
            hits = _rank(ids, fuse(bm, rr, self.spec.fusion_weight), k)
            out[qid] = {h.doc_id: h.score for h in hits}
        return out


def runs_for_weights(
    scored: dict[str, Scored], weights: list[float], k: int = 100
) -> dict[float, dict[str, dict[str, float]]]:
    """Fuse precomputed candidate scores with each weight: {w: run}."""
    return {
        w: {q: {h.doc_id: h.score for h in _rank(ids, fuse(bm, rr, w), k)} for q, (ids, bm, rr) in scored.items()}
        for w in weights
    }
