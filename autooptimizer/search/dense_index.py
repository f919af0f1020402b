"""Nearest documents of one corpus to a query vector: the dense half of an expert's hybrid first stage.

A scan of every document vector is exact but reads the whole corpus matrix per query: on npl (11,429 documents x 384
float32, 17.5 MB) the search service's candidate stage cost ~1.3 ms more per query with it than with the graph,
about a quarter of what the dense expert costs beyond the champion (most of the rest: the features of the extra
candidates), and the promotion rule's serving-cost budget is counted in such milliseconds (docs/benchmarks.md, "Dense
candidates: HNSW"). Above `EXACT_BELOW` documents the search runs on a faiss HNSW graph (Malkov & Yashunin 2018,
"Efficient and robust approximate nearest neighbor search using Hierarchical Navigable Small World graphs"), which
visits a few hundred vectors per query.

Training (`ltr_fusion.FirstStage`) and serving (`LtrFusionReranker.extra_candidates`) build their own index from the
same rows and vectors; the graph is built on one thread, in row order, with faiss's fixed level seed, so both give the
same lists (tests/test_search_dense_index.py builds two and compares). The recall against the exact scan is measured
in docs/benchmarks.md ("Dense candidates: HNSW instead of a scan").
"""

from __future__ import annotations

import operator
import threading
from typing import Any

import numpy as np

from autooptimizer.errors import ConfigError

EXACT_BELOW = 4096
"""Corpora with fewer documents are scanned exactly: the matrix stays in cache (6,000 x 384 cost 0.2 ms), and a
graph would only add build time and approximation."""
HNSW_M = 16
"""Links per node. On npl's and lisa's MiniLM vectors (k 100, efSearch 200) 16 found as many true neighbours as 32
(recall 0.995 vs 0.996) in 0.32 vs 0.40 ms per query (docs/benchmarks.md, "Dense candidates: HNSW")."""
EF_CONSTRUCTION = 80
EF_SEARCH_MIN = 128
"""The search beam: max(EF_SEARCH_MIN, 2k) candidates are kept while walking the graph."""

_BUILD_LOCK = threading.Lock()


class DenseIndex:
    """The `rows` (collection rows, shape (n,)) of one corpus and their unit vectors `vecs` (n, dim), searchable by
    inner product. `nearest` gives rows nearest first; within the exact scan's top k, equal similarities go to the
    lower row (which of several documents tied at the k-th place gets in is numpy's argpartition's choice:
    deterministic, not the lower row). Exact when there are fewer than `exact_below` rows (default `EXACT_BELOW`).
    Raises ValueError when rows and vectors differ in number or are not (n,) and (n, dim), and `nearest` when the
    query's dimension is not the vectors' or it holds NaN or inf; ConfigError when a graph is needed and faiss is not
    installed."""

    def __init__(self, rows: np.ndarray, vecs: np.ndarray, exact_below: int | None = None) -> None:
        self.rows = np.asarray(rows, dtype=np.int64)
        if self.rows.ndim != 1 or np.ndim(vecs) != 2:  # else the scan fails on numpy's indexing, the build on faiss'
            raise ValueError(f"rows of shape {self.rows.shape} and vectors of shape {np.shape(vecs)}; "
                             "expected (n,) and (n, dim)")
        if len(self.rows) != len(vecs):
            raise ValueError(f"{len(self.rows)} rows but {len(vecs)} vectors")
        self.dim = int(np.shape(vecs)[-1])
        self.exact = len(self.rows) < (EXACT_BELOW if exact_below is None else exact_below)
        self.vecs = np.ascontiguousarray(vecs, dtype=np.float32) if self.exact else None
        self.graph = None if self.exact else _hnsw(vecs)
        self._params: dict[int, Any] = {}  # faiss search parameters per k (read-only once made)

    def __len__(self) -> int:
        return len(self.rows)

    def nearest(self, q: np.ndarray, k: int) -> np.ndarray:
        """Rows of the (at most) `k` documents with the highest inner product with `q` (dim,), nearest first."""
        q = np.asarray(q, dtype=np.float32)
        if q.shape != (self.dim,):  # faiss would fail a bare assert; numpy would quote its matmul signature
            raise ValueError(f"query vector of shape {q.shape}; the index holds {self.dim}-dimension vectors")
        if not np.isfinite(q).all():  # every similarity would be NaN: the scan would return arbitrary rows
            raise ValueError("query vector is not finite (NaN or inf)")
        k = min(operator.index(k), len(self.rows))  # an int for faiss, which refuses numpy's integers
        if k <= 0:
            return np.zeros(0, dtype=np.int64)
        if self.graph is None:
            assert self.vecs is not None
            sims = self.vecs @ q
            top = np.argpartition(-sims, k - 1)[:k] if k < len(self.rows) else np.arange(len(self.rows))
            return self.rows[top[np.lexsort((self.rows[top], -sims[top]))]]
        params = self._params.get(k)
        if params is None:
            import faiss

            ef = max(EF_SEARCH_MIN, 2 * k)
            params = self._params.setdefault(k, faiss.SearchParametersHNSW(efSearch=ef))  # pyright: ignore[reportAttributeAccessIssue]
        _, found = self.graph.search(q[None, :], k, params=params)
        found = found[0]
        return self.rows[found[found >= 0]]


def _hnsw(vecs: np.ndarray):
    """An inner-product HNSW graph over `vecs`, built on one thread so the same vectors give the same graph."""
    try:
        import faiss
    except ImportError as exc:  # e.g. a machine set up without the `ml` extra
        raise ConfigError(
            f"Searching a corpus of {len(vecs)} documents for dense candidates needs faiss, which is not installed.",
            "Install the project's ml extra (pip install -e '.[ml]', or pip install faiss-cpu).",
        ) from exc

    data = np.ascontiguousarray(vecs, dtype=np.float32)
    graph = faiss.IndexHNSWFlat(data.shape[1], HNSW_M, faiss.METRIC_INNER_PRODUCT)
    graph.hnsw.efConstruction = EF_CONSTRUCTION
    with _BUILD_LOCK:  # faiss's thread count is process-wide: hold it at one while this graph is built
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            graph.add(data)
        finally:
            faiss.omp_set_num_threads(threads)
    return graph
