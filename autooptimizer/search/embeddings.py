"""Document embeddings cached on disk per (encoder identity, doc id + text hash).

Layout: AUTOOPT_HOME/embeddings/<encoder-id>/shard-<hash>.npz, each shard holding `keys` and `vectors`.
Shards are written every few hundred documents, so an interrupted corpus encoding resumes where it stopped, and
collections that overlap (scifact alone, scifact+cran) share the vectors of their common documents.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from autooptimizer.search.beir import Collection
from autooptimizer.search.encoder import Encoder

SHARD_SIZE = 256
_MATRICES: dict[tuple[str, str], np.ndarray] = {}
_LOCK = threading.Lock()


def doc_key(doc_id: str, text: str) -> str:
    return hashlib.sha1(f"{doc_id}\0{text}".encode()).hexdigest()[:24]


class EmbeddingStore:
    """The on-disk cache for one encoder."""

    def __init__(self, encoder_id: str) -> None:
        from autooptimizer.settings import get_settings

        self.dir = get_settings().home / "embeddings" / encoder_id
        self.dir.mkdir(parents=True, exist_ok=True)

    def load(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for shard in sorted(self.dir.glob("shard-*.npz")):
            try:
                with np.load(shard, allow_pickle=False) as z:
                    out.update(zip(z["keys"].tolist(), z["vectors"], strict=True))
            except (OSError, ValueError, KeyError):
                continue  # a torn shard is re-encoded, never trusted
        return out

    def write(self, keys: list[str], vectors: np.ndarray) -> Path:
        name = hashlib.sha1("".join(keys).encode()).hexdigest()[:16]
        path = self.dir / f"shard-{name}.npz"
        tmp = self.dir / f".tmp-{name}-{os.getpid()}-{threading.get_ident()}.npz"
        np.savez(tmp, keys=np.array(keys), vectors=vectors.astype(np.float32))
        os.replace(tmp, path)
        return path


def doc_embeddings(
    collection: Collection,
    encoder: Encoder,
    progress: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """A (n_docs, dim) matrix aligned with `collection.doc_ids`; encodes only documents missing from the cache.

    Returns the same in-memory matrix for the same (encoder, collection) within a process."""
    store = EmbeddingStore(encoder.identity)
    mem_key = (str(store.dir), collection.content_hash())
    with _LOCK:
        if mem_key in _MATRICES:
            return _MATRICES[mem_key]
        cached = store.load()
        keys = [doc_key(d, collection.text(d)) for d in collection.doc_ids]
        missing = [n for n, k in enumerate(keys) if k not in cached]
        if missing:
            _encode_missing(collection, encoder, store, keys, missing, cached, progress, on_progress)
        matrix = np.stack([cached[k] for k in keys]).astype(np.float32)
        _MATRICES[mem_key] = matrix
        return matrix


def _encode_missing(collection, encoder, store, keys, missing, cached, progress, on_progress) -> None:
    import torch
    from tqdm.auto import tqdm

    from autooptimizer.infra.cpu import ThreadGovernor
    from autooptimizer.settings import get_settings

    bar = tqdm(total=len(missing), desc=f"encoding docs ({encoder.identity})", unit="doc", disable=not progress)
    before = torch.get_num_threads()
    # AUTOOPT_THREADS unset: re-check the idle cores between shards (a shard is 10-60 s of work); set: keep it
    governor = ThreadGovernor(start=before) if get_settings().threads_auto else None
    try:
        for start in range(0, len(missing), SHARD_SIZE):
            if governor is not None:
                torch.set_num_threads(governor.next())
                bar.set_postfix(threads=governor.current, refresh=False)
            rows = missing[start : start + SHARD_SIZE]
            vecs = encoder.encode([collection.text(collection.doc_ids[n]) for n in rows])
            chunk_keys = [keys[n] for n in rows]
            store.write(chunk_keys, vecs)
            cached.update(zip(chunk_keys, vecs, strict=True))
            bar.update(len(rows))
            if on_progress:
                on_progress(start + len(rows), len(missing))
    finally:
        bar.close()
        if governor is not None:
            torch.set_num_threads(before)


def count_cached(collection: Collection, encoder_id: str) -> int:
    """How many of the collection's documents already have a cached vector for this encoder."""
    cached = EmbeddingStore(encoder_id).load()
    return sum(doc_key(d, collection.text(d)) in cached for d in collection.doc_ids)
