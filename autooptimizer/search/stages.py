"""Where a /search request's time goes: a per-thread clock of its stages, read by the service and `bench search`.

Stages: `bm25` (candidates), `encode` (query encoding, recorded by the encoder itself, so it is counted wherever a
reranker encodes), `rerank` (the reranker's own work, without `encode`), `fusion` (z-scores + top-k) and `serialise`
(the response to JSON bytes). A request runs on one worker thread, so a thread-local dict is enough; work outside
a request (bulk document encoding) finds no clock and records nothing. Cost: two perf_counter calls per stage.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

STAGES: tuple[str, ...] = ("bm25", "encode", "rerank", "fusion", "serialise")
_local = threading.local()


def begin() -> dict[str, float]:
    """Start this thread's clock for one request: {stage: seconds}."""
    times: dict[str, float] = {}
    _local.times = times
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
