"""Retry an operation that fails transiently; every retry is counted (the retries gate watches the counter)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class TransientError(Exception):
    """A failure worth retrying (a flaky dependency, an injected fault)."""


TRANSIENT: tuple[type[BaseException], ...] = (TransientError, TimeoutError, ConnectionError)


def retry(
    operation: str,
    fn: Callable[[], T],
    attempts: int = 4,
    backoff_s: float = 0.0,
    on_retry: Callable[[str, int, BaseException], None] | None = None,
    injected_failures: int = 0,
) -> T:
    """Call `fn` up to `attempts` times. The first `injected_failures` attempts fail with TransientError
    (fault injection for the simulator). Non-transient errors are raised at once."""
    last: BaseException | None = None
    for attempt in range(1, attempts + 1):
        if attempt > 1:
            if on_retry is not None and last is not None:
                on_retry(operation, attempt - 1, last)
            if backoff_s:
                time.sleep(backoff_s * 2 ** (attempt - 2))
        try:
            if attempt <= injected_failures:
                raise TransientError(f"injected transient failure in {operation} (attempt {attempt})")
            return fn()
        except TRANSIENT as exc:
            last = exc
    assert last is not None
    raise last
