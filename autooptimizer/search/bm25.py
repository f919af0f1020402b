"""BM25 retrieval (bm25s, English Snowball stemmer + stopwords), cached per collection content.

The index is saved under AUTOOPT_HOME/indexes/<content-hash>/, so a restart or a second model version over the same
collection reuses it instead of re-tokenizing the corpus.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np

from autooptimizer.search.beir import Collection

INDEX_FORMAT = "bm25s-en-snowball-v1"


def _stemmer():
    import Stemmer

    return Stemmer.Stemmer("english")


class BM25Index:
    """BM25 over a Collection. `top(query, k)` returns (collection row indices, scores), best first."""

    def __init__(self, collection: Collection, cache: bool = True) -> None:
        import bm25s

        self.collection = collection
        self._stem = _stemmer()
        self._lock = threading.Lock()  # PyStemmer objects are not thread-safe
        path = self.cache_dir(collection) if cache else None
        if path is not None and (path / "params.index.json").is_file():
            self.retriever = bm25s.BM25.load(str(path), show_progress=False)
        else:
            texts = [collection.text(d) for d in collection.doc_ids]
            tokens = bm25s.tokenize(texts, stopwords="en", stemmer=self._stem, show_progress=False)
            self.retriever = bm25s.BM25()
            self.retriever.index(tokens, show_progress=False)
            if path is not None:
                self._save(path)
        self.vocab: dict[str, int] = self.retriever.vocab_dict or {}

    @staticmethod
    def cache_dir(collection: Collection) -> Path:
        from autooptimizer.settings import get_settings

        return get_settings().home / "indexes" / f"{collection.content_hash()}-{INDEX_FORMAT}"

    def _save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".bm25-", dir=path.parent))
        try:
            self.retriever.save(str(tmp), show_progress=False)
            with contextlib.suppress(OSError):  # a concurrent writer saved the same index first
                os.rename(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def tokenize(self, query: str) -> list[str]:
        import bm25s

        with self._lock:
            toks = bm25s.tokenize([query], stopwords="en", stemmer=self._stem, return_ids=False, show_progress=False)
        return [t for t in toks[0] if t in self.vocab]

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every document (zeros when no query term is in the vocabulary)."""
        toks = self.tokenize(query)
        if not toks:
            return np.zeros(len(self.collection), dtype=np.float32)
        return np.asarray(self.retriever.get_scores(toks), dtype=np.float32)

    def top(self, query: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k best documents that match at least one query term."""
        scores = self.scores(query)
        idx = top_rows(scores, k)
        return idx, scores[idx]


def top_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """Rows of the k highest positive `scores` (a document matching no query term scores 0), best first; ties go to
    the lower row, so the order is deterministic."""
    k = min(k, len(scores))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    idx = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    idx = idx[np.lexsort((idx, -scores[idx]))]
    return idx[scores[idx] > 0]
