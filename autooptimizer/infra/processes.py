"""Whether a process id still names a live process (the detached Prometheus and model servers' pid files)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """True while `pid` runs: kill(pid, 0) succeeds (or is refused: someone else's live process) and /proc does not
    show it as a zombie (an exited child of ours still answers kill(0) until reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError, ValueError, IndexError):
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True
