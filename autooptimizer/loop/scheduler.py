"""Runs a cycle every `loop.intervalMinutes` when the profile enables the scheduler (off in dev: cycles on demand).

A tick that finds a cycle already running is skipped, not queued (the cycle lock decides), so a slow cycle never
causes a pile-up. On start it recovers cycles a dead process left `running` before the first tick.
"""

from __future__ import annotations

import logging
import threading
import time

from autooptimizer.loop.cycle import CycleOptions, CycleRunner

log = logging.getLogger(__name__)


class Scheduler:
    def __init__(self, runner: CycleRunner, *, interval_minutes: float | None = None,
                 enabled: bool | None = None) -> None:
        loop = runner.profile.loop
        self.runner = runner
        self.enabled = loop.scheduler if enabled is None else enabled
        self.interval_s = 60.0 * (interval_minutes or loop.interval_minutes)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_at: float | None = None
        self.ticks = 0
        self.skipped = 0

    def start(self) -> Scheduler:
        self.runner.recover()
        if self.enabled and self._thread is None:
            self._next_at = time.time() + self.interval_s
            self._thread = threading.Thread(target=self._loop, name="autoopt-scheduler", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def next_cycle_in_minutes(self) -> float | None:
        if not self.enabled or self._next_at is None:
            return None
        return round(max(0.0, self._next_at - time.time()) / 60.0, 3)

    def _loop(self) -> None:
        while not self._stop.is_set():
            wait = max(0.0, (self._next_at or time.time()) - time.time())
            if self._stop.wait(wait):
                return
            self._next_at = time.time() + self.interval_s
            self.ticks += 1
            try:
                started = self.runner.trigger(CycleOptions(trigger="schedule"))
            except Exception:  # noqa: BLE001 - the scheduler must outlive one bad cycle start
                log.exception("scheduled cycle failed to start")
                started = None
            if started is None:
                self.skipped += 1
                log.info("scheduled tick skipped: a cycle is already running")
