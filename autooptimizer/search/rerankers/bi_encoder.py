"""`bi_encoder` (default): cosine of the query embedding with cached document embeddings.

A search costs one query encoding plus dot products over the candidates; the corpus is embedded once per encoder
(see embeddings.py) in `warm()`, never per request.
"""

from __future__ import annotations

import threading

import numpy as np

from autooptimizer.search.encoder import DEFAULT_MAX_SEQ_LENGTH, Encoder, get_encoder
from autooptimizer.search.rerankers import register


class BiEncoderReranker:
    kind = "bi_encoder"

    def __init__(self, encoder_path: str | None, collection, max_seq_length: int = DEFAULT_MAX_SEQ_LENGTH) -> None:
        self.encoder_path = encoder_path
        self.collection = collection
        self.max_seq_length = max_seq_length
        self._matrix: np.ndarray | None = None
        self._encoder: Encoder | None = None
        self._lock = threading.Lock()

    @property
    def encoder(self) -> Encoder:
        """Held from the first use on (as the matrix is): a request still running after a swap never loads it back
        into the process cache that search/release.py emptied."""
        if self._encoder is None:
            self._encoder = get_encoder(self.encoder_path, self.max_seq_length)
        return self._encoder

    def held(self) -> list[object]:
        """The process-cached objects this reranker holds (search/release.py keeps them while it serves)."""
        return [x for x in (self._encoder, self._matrix) if x is not None]

    def warm(self, progress: bool = True) -> None:
        self._embedded(progress)

    def missing_vectors(self) -> int:
        """Collection documents without a vector: 0 once warm, else those missing from the on-disk cache (the
        service's background start serves BM25 alone until this is 0)."""
        from autooptimizer.search.embeddings import count_cached
        from autooptimizer.search.encoder import encoder_identity

        if self._matrix is not None:
            return len(self.collection) - int(self._matrix.shape[0])
        return len(self.collection) - count_cached(self.collection, encoder_identity(self.encoder_path,
                                                                                     self.max_seq_length))

    def _embedded(self, progress: bool) -> np.ndarray:
        """The corpus embedding matrix (one row per collection document), computed once."""
        from autooptimizer.search.embeddings import doc_embeddings

        with self._lock:
            if self._matrix is None:
                self._matrix = doc_embeddings(self.collection, self.encoder, progress=progress)
            return self._matrix

    @property
    def matrix(self) -> np.ndarray:
        return self._matrix if self._matrix is not None else self._embedded(progress=False)

    def doc_vectors(self, doc_ids: list[str]) -> np.ndarray:
        rows = [self.collection.index_of[d] for d in doc_ids]
        return self.matrix[rows]

    def score(self, query: str, doc_ids: list[str], bm25_scores: np.ndarray) -> np.ndarray:
        if not doc_ids:
            return np.zeros(0, dtype=np.float32)
        q = self.encoder.encode([query])[0]
        return self.doc_vectors(doc_ids) @ q

    def score_many(self, queries: list[str], doc_ids: list[list[str]]) -> list[np.ndarray]:
        """Batch form for offline evaluation: encodes all queries in one call."""
        qv = self.encoder.encode(queries)
        empty = np.zeros(0, dtype=np.float32)
        return [self.doc_vectors(ids) @ q if ids else empty for q, ids in zip(qv, doc_ids, strict=True)]


@register("bi_encoder")
def build(spec, collection) -> BiEncoderReranker:
    msl = int(spec.params.get("max_seq_length", DEFAULT_MAX_SEQ_LENGTH))
    return BiEncoderReranker(spec.resolved_encoder_path(), collection, msl)
