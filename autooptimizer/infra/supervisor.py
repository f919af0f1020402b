"""A small process supervisor: `autoopt serve --supervise` runs the optimizer service as a child and starts it again
whenever it dies (SIGKILL, OOM kill, a crash), as systemd's `Restart=always` or Kubernetes' restartPolicy would.

- The child is `python -m autooptimizer serve ...` without `--supervise`; its pid is written to
  `AUTOOPT_HOME/run/optimizer.pid` (the supervisor's own to `supervisor.pid`), so an operator or the soak harness
  can signal exactly the service.
- A child that exits with status 0 (a clean shutdown) is not restarted; any other end is, after `backoff_s`
  (doubling up to `max_backoff_s` while the child keeps dying within `stable_s` of its start, reset once it has run
  that long). `max_restarts` caps restarts in a row of quick deaths (None: no cap).
- SIGTERM / SIGINT to the supervisor stop the child (SIGTERM, then SIGKILL after `stop_timeout_s`) and end it.
- Each start and end is appended to `AUTOOPT_HOME/run/supervisor.jsonl` (time, pid, exit status or signal).

On each start the service recovers what its dead predecessor left: the scheduler's start runs
`CycleRunner.recover()`, which aborts cycles left `running` and restores their safe point (loop/cycle.py), so git,
the service and the registry agree again before the first new cycle.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class Supervisor:
    def __init__(self, argv: Sequence[str], run_dir: Path, *, backoff_s: float = 1.0, max_backoff_s: float = 30.0,
                 stable_s: float = 60.0, max_restarts: int | None = None, stop_timeout_s: float = 20.0) -> None:
        self.argv, self.run_dir = list(argv), run_dir
        self.backoff_s, self.max_backoff_s, self.stable_s = backoff_s, max_backoff_s, stable_s
        self.max_restarts, self.stop_timeout_s = max_restarts, stop_timeout_s
        self.child: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._stop = threading.Event()

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "optimizer.pid"

    def _event(self, **data: Any) -> None:
        with (self.run_dir / "supervisor.jsonl").open("a") as fh:
            fh.write(json.dumps({"ts": time.time(), **data}) + "\n")

    def run(self) -> int:
        """Start the child and keep it running until stopped; returns the last child's exit status."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "supervisor.pid").write_text(f"{os.getpid()}\n")
        delay, quick_deaths, code = self.backoff_s, 0, 0
        while not self._stop.is_set():
            started = time.monotonic()
            self.child = subprocess.Popen(self.argv)  # noqa: S603 - our own command line
            self.starts += 1
            self.pid_file.write_text(f"{self.child.pid}\n")
            self._event(event="start", pid=self.child.pid, start=self.starts)
            code = self.child.wait()
            self._event(event="exit", pid=self.child.pid, status=code,
                        signal=signal.Signals(-code).name if code < 0 else None)
            if self._stop.is_set() or code == 0:
                break
            lived = time.monotonic() - started
            quick_deaths = quick_deaths + 1 if lived < self.stable_s else 0
            delay = min(delay * 2, self.max_backoff_s) if quick_deaths > 1 else self.backoff_s
            if self.max_restarts is not None and quick_deaths > self.max_restarts:
                log.error("the optimizer died %d times in a row within %.0f s of starting; giving up",
                          quick_deaths, self.stable_s)
                break
            log.warning("the optimizer (pid %d) ended with %s; restarting in %.1f s", self.child.pid, code, delay)
            if self._stop.wait(delay):
                break
        return code

    def stop(self, *_: object) -> None:
        """Stop the loop and ask the child to end (SIGTERM; SIGKILL after `stop_timeout_s`). Safe in a signal
        handler: it never waits, `run()`'s own wait sees the child end."""
        self._stop.set()
        child = self.child
        if child is None or child.poll() is not None:
            return
        child.terminate()

        def kill_if_alive() -> None:
            if child.poll() is None:
                child.kill()

        timer = threading.Timer(self.stop_timeout_s, kill_if_alive)
        timer.daemon = True
        timer.start()


def serve_argv(host: str, port: int | None, env: str | None) -> list[str]:
    """The child's command line: this interpreter running `autoopt serve` with the same options."""
    argv = [sys.executable, "-m", "autooptimizer", "serve", "--host", host]
    if port:
        argv += ["--port", str(port)]
    if env:
        argv += ["--env", env]
    return argv


def supervise(argv: Sequence[str], run_dir: Path) -> int:
    """Run `argv` under a Supervisor in the foreground, stopping cleanly on SIGTERM / SIGINT."""
    sup = Supervisor(argv, run_dir)
    signal.signal(signal.SIGTERM, sup.stop)
    signal.signal(signal.SIGINT, sup.stop)
    return sup.run()
