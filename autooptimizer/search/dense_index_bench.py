"""`autoopt bench dense-index`: the dense candidates' search, exact scan vs HNSW graph, side by side per domain.

For each domain: its corpus' base vectors (the embedding cache, at the champion's truncation), its queries encoded
once, then every query searched by both (exact first, graph second, in turn, so a burst of other work hits both),
timed on the thread's CPU clock. Recall@k is the share of the exact top k the graph returns. No judgments are read:
this measures the search, not ranking quality.
"""

from __future__ import annotations

import statistics
import time

from pydantic import BaseModel, Field


class DenseIndexRow(BaseModel):
    domain: str
    docs: int
    queries: int
    k: int
    build_s: float = Field(description="graph build, seconds (one thread)")
    exact_ms: float = Field(description="median CPU ms per query, exact scan of every vector")
    graph_ms: float = Field(description="median CPU ms per query, HNSW graph")
    ratio: float = Field(description="graph_ms / exact_ms")
    recall: float = Field(description="mean share of the exact top k the graph returns")
    worst_recall: float


def run(domains: list[str], k: int = 100, max_seq_length: int = 128) -> list[DenseIndexRow]:
    """One row per domain (see the module docstring); `max_seq_length` picks the cached vectors."""
    import numpy as np

    from autooptimizer.infra.serve import limit_threads
    from autooptimizer.search.beir import Collection, load_beir
    from autooptimizer.search.dense_index import DenseIndex
    from autooptimizer.search.embeddings import doc_embeddings
    from autooptimizer.search.encoder import get_encoder
    from autooptimizer.settings import get_settings

    folders = [get_settings().dataset(name) for name in domains]  # a wrong name fails now, not after the others ran
    limit_threads(1)
    encoder = get_encoder(None, max_seq_length)
    rows_out = []
    for name, folder in zip(domains, folders, strict=True):
        dataset = load_beir(folder)  # read once: the collection's corpus and the queries
        collection = Collection([dataset])
        matrix = doc_embeddings(collection, encoder, progress=True)  # vectors not cached yet: minutes, shown
        rows = np.arange(len(collection), dtype=np.int64)
        queries = encoder.encode(list(dataset.queries.values()))
        exact = DenseIndex(rows, matrix, exact_below=len(rows) + 1)
        t0 = time.perf_counter()
        graph = DenseIndex(rows, matrix, exact_below=0)
        build = time.perf_counter() - t0
        times: list[list[float]] = [[], []]
        recall = []
        for q in queries:
            found = []
            for i, index in enumerate((exact, graph)):
                t = time.thread_time()
                found.append(index.nearest(q, k))
                times[i].append(time.thread_time() - t)
            recall.append(len(set(found[0].tolist()) & set(found[1].tolist())) / max(1, len(found[0])))
        ex, gr = (1000 * statistics.median(t) for t in times)
        rows_out.append(
            DenseIndexRow(
                domain=name,
                docs=len(rows),
                queries=len(queries),
                k=k,
                build_s=round(build, 2),
                exact_ms=round(ex, 3),
                graph_ms=round(gr, 3),
                ratio=round(gr / ex, 3),
                recall=round(float(np.mean(recall)), 4),
                worst_recall=round(min(recall), 4),
            )
        )
    return rows_out
