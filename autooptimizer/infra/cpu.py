"""How many CPU cores are free for this process: the default of AUTOOPT_THREADS, and its re-check during long encodes.

On a shared 2-core box one torch thread was 4-40x faster than two under load (ENVIRONMENT.md): torch's intra-op
threads wait for each other at every operator, so a second thread that has to share its core stalls both. So a
second thread is used only when a whole core is free of other work:

    threads = clamp(floor(cores - others + SLACK), 1, cores)

`others` is the CPU other processes use, in cores. At start it is the 1-minute load average (what was running just
before this process; it counts this process only if it ran a while); during a long encode, `ThreadGovernor` reads it
from /proc/stat over the last interval minus this process's own CPU time, so the encoder's own threads never read as
"someone else". `SLACK` (0.25 core) lets a box with a few background daemons (~0.1-0.2 core) count as idle.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field

SLACK = 0.25


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask; a container's CPU set), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def threads_for(others: float, cores: int) -> int:
    """Threads to use when other processes keep `others` cores busy (formula in the module docstring)."""
    if not math.isfinite(others):
        return 1  # an unreadable load is not an idle machine
    return max(1, min(cores, math.floor(cores - max(0.0, others) + SLACK)))


def idle_threads() -> int:
    """AUTOOPT_THREADS' default: threads for the cores the 1-minute load average leaves free (1 if unreadable)."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return 1
    return threads_for(load, usable_cores())


def busy_seconds() -> float | None:
    """CPU-seconds all cores have spent busy since boot (/proc/stat: total minus idle and iowait); None off Linux."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = [int(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    if len(fields) < 5:
        return None
    busy = sum(fields[:8]) - fields[3] - fields[4]  # user nice system idle iowait irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system


@dataclass
class ThreadGovernor:
    """Re-decides the thread count from what OTHER processes used since the last call (see the module docstring).

    `next()` returns the threads to use for the next chunk of work; call it between chunks of a few seconds each
    (shorter intervals read scheduler noise). Without /proc/stat it keeps the start value."""

    start: int
    cores: int = field(default_factory=usable_cores)
    min_interval_s: float = 2.0
    history: list[tuple[float, int]] = field(default_factory=list)  # (others in cores, threads) per decision
    _mark: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        self.current = max(1, min(self.start, self.cores))
        self._reset()

    def _reset(self) -> None:
        busy = busy_seconds()
        self._mark = None if busy is None else (time.monotonic(), busy, _own_seconds())

    def others(self) -> float | None:
        """Cores other processes kept busy since the mark, or None (no /proc/stat, or too short an interval)."""
        busy = busy_seconds()
        if self._mark is None or busy is None:
            return None
        t0, busy0, own0 = self._mark
        wall = time.monotonic() - t0
        if wall < self.min_interval_s:
            return None
        return max(0.0, ((busy - busy0) - (_own_seconds() - own0)) / wall)

    def next(self) -> int:
        others = self.others()
        if others is not None:
            self.current = threads_for(others, self.cores)
            self.history.append((round(others, 2), self.current))
            self._reset()
        return self.current
