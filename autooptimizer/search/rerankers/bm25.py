"""`bm25`: no neural reranker; the BM25 order as is (a baseline and the cheapest variant)."""

from __future__ import annotations

import numpy as np

from autooptimizer.search.rerankers import register


class BM25Only:
    kind = "bm25"

    def warm(self, progress: bool = True) -> None:
        return None

    def held(self) -> list[object]:
        return []  # nothing from a process cache (the BM25 index is the pipeline's)

    def score(self, query: str, doc_ids: list[str], bm25_scores: np.ndarray) -> np.ndarray:
        return np.asarray(bm25_scores, dtype=np.float32)


@register("bm25")
def build(spec, collection) -> BM25Only:
    return BM25Only()
