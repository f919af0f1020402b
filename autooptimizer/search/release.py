"""Giving back a swapped-out model version's memory (the search service calls this after every swap).

Loaded models live in process caches so that stable and canary share them: encoders (search/encoder.py), corpus
embedding matrices (search/embeddings.py) and cross-encoders (search/rerankers/cross_encoder.py). Without this, a
version that stopped being served stayed in those caches for the life of the process: the second month soak's search
service kept an operator's bad cross-encoder after its rollback (+449 MiB, docs/benchmarks.md, Soak).

`release(gone, keep)`:
1. evicts every cache entry that no kept pipeline holds (each reranker names the cached objects it holds with
   `held()`; when one does not say, nothing is evicted: what it needs is unknown);
2. in a thread, waits until the dropped pipelines are collected (requests still running on the old routing finish
   first: they hold their models directly, never through the caches, so they cannot load one back), then runs
   `gc.collect()` and glibc's `malloc_trim(0)` (infra/memory.py), so the freed heap leaves the resident set.
"""

from __future__ import annotations

import gc
import sys
import threading
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from autooptimizer.infra.memory import rss_bytes, trim_heap
from autooptimizer.search.pipeline import SearchPipeline

WAIT_S = 120.0  # a dropped pipeline still referenced after this (a stuck request) is reported, not waited for
POLL_S = 0.1  # first pause between collections; doubles up to 2 s
# module -> (its cache of loaded objects, the lock guarding it); a module never imported has nothing cached
CACHES = {"autooptimizer.search.encoder": ("_CACHE", "_CACHE_LOCK"),
          "autooptimizer.search.embeddings": ("_MATRICES", "_LOCK"),
          "autooptimizer.search.rerankers.cross_encoder": ("_MODELS", "_LOCK")}


@dataclass
class Release:
    """One release after a swap, shown in the service's /admin/state as `released`."""

    versions: list[str]
    evicted: int
    rss_before: int | None
    started: float = field(default_factory=time.time)
    done: threading.Event = field(default_factory=threading.Event)
    collected: bool | None = None  # every dropped pipeline was garbage-collected
    trimmed: bool | None = None  # malloc_trim ran (False: no glibc)
    rss_after: int | None = None

    def view(self) -> dict[str, Any]:
        mib = 1 << 20
        return {"versions": self.versions, "evicted": self.evicted, "done": self.done.is_set(),
                "collected": self.collected, "trimmed": self.trimmed,
                "rss_before_mib": None if self.rss_before is None else round(self.rss_before / mib, 1),
                "rss_after_mib": None if self.rss_after is None else round(self.rss_after / mib, 1)}


def held_objects(pipelines: Iterable[SearchPipeline]) -> set[int] | None:
    """ids of the cached objects the pipelines hold; None when a reranker does not say (then nothing may go)."""
    out: set[int] = set()
    for pipe in pipelines:
        held = getattr(pipe.reranker, "held", None)
        objects = held() if held is not None else None
        if objects is None:
            return None
        out |= {id(obj) for obj in objects}
    return out


def evict_unheld(keep: Iterable[SearchPipeline]) -> int:
    """Drop every process-cache entry no kept pipeline holds. Returns how many went."""
    held = held_objects(keep)
    if held is None:
        return 0
    evicted = 0
    for module_name, (cache_attr, lock_attr) in CACHES.items():
        module = sys.modules.get(module_name)
        if module is None:
            continue
        cache: dict[Any, Any] = getattr(module, cache_attr)
        with getattr(module, lock_attr):
            for key in [k for k, v in cache.items() if id(v) not in held]:
                del cache[key]
                evicted += 1
    return evicted


def release(gone: list[SearchPipeline], keep: list[SearchPipeline], wait_s: float = WAIT_S) -> Release:
    """Evict what only `gone` used, then collect and trim in a thread once `gone` is unreferenced. The caller must
    drop its own references to `gone` after this returns."""
    refs = [weakref.ref(p) for p in gone]
    rel = Release(versions=[p.version for p in gone], evicted=evict_unheld(keep), rss_before=rss_bytes())
    threading.Thread(target=_finish, args=(rel, refs, wait_s), name="release-models", daemon=True).start()
    return rel


def _finish(rel: Release, refs: list[weakref.ref[SearchPipeline]], wait_s: float) -> None:
    """Collect until every dropped pipeline is gone (polling with back-off: a running request ends in seconds),
    then trim the heap."""
    deadline, pause = time.monotonic() + wait_s, POLL_S
    try:
        while True:
            gc.collect()
            if all(r() is None for r in refs):
                rel.collected = True
                break
            if time.monotonic() > deadline:
                rel.collected = False
                break
            time.sleep(pause)
            pause = min(2.0, pause * 2)
        gc.collect()
        rel.trimmed = trim_heap()
        rel.rss_after = rss_bytes()
    finally:
        rel.done.set()
