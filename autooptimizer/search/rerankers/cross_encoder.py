"""`cross_encoder`: a MiniLM cross-encoder head scoring (query, doc) pairs.

Loads `sentence_transformers.CrossEncoder(path, num_labels=1)`: a trained head from the version's encoder_path, or
the base MiniLM with a fresh (untrained) head. Costs one forward pass per candidate, so keep rerank_depth small.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import numpy as np

from autooptimizer.search.rerankers import register

if TYPE_CHECKING:
    from sentence_transformers import CrossEncoder

_MODELS: dict[tuple[str | None, int], CrossEncoder] = {}
_LOCK = threading.Lock()


def load_cross_encoder(path: str | None, max_length: int = 256) -> CrossEncoder:
    import torch
    from sentence_transformers import CrossEncoder

    from autooptimizer.search.encoder import base_model_path
    from autooptimizer.settings import apply_offline_env, get_settings

    with _LOCK:
        key = (path, max_length)
        if key not in _MODELS:
            apply_offline_env()
            torch.set_num_threads(get_settings().threads)
            from autooptimizer.infra.accelerator import torch_device

            _MODELS[key] = CrossEncoder(path or base_model_path(), num_labels=1, max_length=max_length,
                                        device=torch_device())
        return _MODELS[key]


class CrossEncoderReranker:
    kind = "cross_encoder"

    def __init__(self, path: str | None, collection, max_length: int = 256, batch_size: int = 16) -> None:
        self.path = path
        self.collection = collection
        self.max_length = max_length
        self.batch_size = batch_size
        self._model: CrossEncoder | None = None

    @property
    def model(self) -> CrossEncoder:
        """Held from the first use on: a request still running after a swap never loads it back into the process
        cache that search/release.py emptied."""
        if self._model is None:
            self._model = load_cross_encoder(self.path, self.max_length)
        return self._model

    def held(self) -> list[object]:
        """The process-cached objects this reranker holds (search/release.py keeps them while it serves)."""
        return [self._model] if self._model is not None else []

    def warm(self, progress: bool = True) -> None:
        _ = self.model

    def score(self, query: str, doc_ids: list[str], bm25_scores: np.ndarray) -> np.ndarray:
        if not doc_ids:
            return np.zeros(0, dtype=np.float32)
        pairs = [(query, self.collection.text(d)) for d in doc_ids]
        out = self.model.predict(pairs, batch_size=self.batch_size, show_progress_bar=False, convert_to_numpy=True)
        return np.asarray(out, dtype=np.float32).reshape(-1)


@register("cross_encoder")
def build(spec, collection) -> CrossEncoderReranker:
    return CrossEncoderReranker(spec.resolved_encoder_path(), collection, int(spec.params.get("max_length", 256)))
