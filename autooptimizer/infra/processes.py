"""Process liveness: whether a process id still names a live process (the detached Prometheus and model servers'
pid files), and worker processes that end with the process that started them."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from pathlib import Path

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


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


def die_with_parent(parent_pid: int) -> bool:
    """Ask Linux to send this process SIGTERM when its parent exits (prctl PR_SET_PDEATHSIG, prctl(2)); exit now if
    the parent `parent_pid` is already gone. A pool worker whose parent was killed (SIGTERM, `timeout`, SIGKILL)
    otherwise sleeps on as an orphan, holding its memory (2.5 GB per repair worker, seen). Returns whether the
    signal is armed (False off Linux or without libc)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)
    return True
