"""pid_alive: a running process, an exited and reaped one, and an unreaped zombie child."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from autooptimizer.infra.processes import pid_alive


def test_running_process_is_alive_and_a_reaped_one_is_not() -> None:
    assert pid_alive(os.getpid())
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert not pid_alive(proc.pid)


def test_an_exited_child_not_yet_reaped_is_not_alive() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while pid_alive(proc.pid) and time.monotonic() < deadline:  # a zombie until wait(): kill(0) still succeeds
        time.sleep(0.05)
    assert not pid_alive(proc.pid) and proc.poll() == 0
