"""Where a /search request's time goes: a per-thread clock of its stages, read by the service and `bench search`.

Stages: `bm25` (candidates, without `encode` when a hybrid first stage encodes the query there), `encode` (query
encoding, recorded by the encoder itself, so it is counted wherever a reranker encodes), `rerank` (the reranker's
own work, without `encode`), `fusion` (z-scores + top-k) and `serialise` (the response to JSON bytes). A request
runs on one worker thread, so a thread-local dict is enough; work outside a request (bulk document encoding) finds
no clock and records nothing. Cost: two perf_counter calls per stage.

Events (`count`) say what ran, not how long: `encoded` (query vectors the model computed), `encode_cached` (query
vectors read from the encoder's LRU) and `reranked` (requests whose reranker scored the candidates). A cost
measurement records them per version, so a figure that skipped the encoding shows it (search/serving_cost.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

STAGES: tuple[str, ...] = ("bm25", "encode", "rerank", "fusion", "serialise")
EVENTS: tuple[str, ...] = ("encoded", "encode_cached", "reranked")
_local = threading.local()


def begin() -> dict[str, float]:
    """Start this thread's clock for one request: {stage: seconds}; its event counts start at 0."""
    times: dict[str, float] = {}
    _local.times = times
    _local.counts = {}
    return times


def end() -> dict[str, float]:
    """Stop this thread's clock and return what it recorded."""
    times: dict[str, float] = getattr(_local, "times", None) or {}
    _local.times = None
    return times


def add(stage: str, seconds: float) -> None:
    times: dict[str, float] | None = getattr(_local, "times", None)
    if times is not None:
        times[stage] = times.get(stage, 0.0) + seconds


def count(event: str, n: int = 1) -> None:
    """Count `n` of `event` (one of EVENTS) on this thread's clock; nothing without one."""
    counts: dict[str, int] | None = getattr(_local, "counts", None)
    if counts is not None and getattr(_local, "times", None) is not None:
        counts[event] = counts.get(event, 0) + n


def events() -> dict[str, int]:
    """{event: count} since this thread's last `begin()` (empty without one); still readable after `end()`."""
    return dict(getattr(_local, "counts", None) or {})


def recorded(stage: str) -> float:
    """Seconds this thread's clock holds for `stage` so far (0 without a clock)."""
    times: dict[str, float] | None = getattr(_local, "times", None)
    return 0.0 if times is None else times.get(stage, 0.0)


@contextmanager
def timed(stage: str) -> Iterator[None]:
    t0 = time.perf_counter()
    try:
        yield
    finally:
        add(stage, time.perf_counter() - t0)
