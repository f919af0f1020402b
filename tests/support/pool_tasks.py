"""Module-level tasks a spawned pool worker can import (tests of ml/repair_sweep's worker pool)."""

from __future__ import annotations

import os
import time
from pathlib import Path


def sleep_after_writing_pid(pid_file: str, seconds: float) -> float:
    """Record this worker's pid, then sleep: the repair still running when another fails."""
    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(seconds)
    return seconds


def fail_once_started(pid_file: str) -> None:
    """Fail as soon as the sleeper has started (its pid file exists): a repair that raises."""
    while not Path(pid_file).exists():
        time.sleep(0.05)
    raise ValueError("this split failed")
