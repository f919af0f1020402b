"""SIGTERM ends a long foreground run (`autoopt soak`, `autoopt demo`) the way Ctrl-C does.

Python turns SIGINT into KeyboardInterrupt, so a run's `finally` stops the servers it started; SIGTERM (`kill`, a CI
job's timeout, a container stop) has no handler and ends the process at once, leaving Prometheus, the search service
and the optimizer running as orphans (found when a month soak was stopped with `kill`). Inside `sigterm_interrupts()`
SIGTERM raises KeyboardInterrupt in the main thread instead, once: a later SIGTERM (`kill` twice, a supervisor that
repeats its TERM) would interrupt the very cleanup the first one started, so it is only reported (SIGKILL forces).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    signal.signal(signum, _stopping)  # the cleanup this starts must not be interrupted by the next one
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _stopping(signum: int, _frame: FrameType | None) -> None:
    """Say so on fd 2 directly: print() here could re-enter a stderr write the main thread is blocked in and raise
    (a buffered stream is not reentrant), which would interrupt the cleanup after all."""
    with contextlib.suppress(OSError):
        os.write(2, f"{signal.Signals(signum).name}: already stopping what was started; SIGKILL forces\n".encode())


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt in the block; the previous handler is back afterwards. A no-op off the main
    thread (Python delivers signals to the main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
