"""SIGTERM ends a soak (and the demo) like Ctrl-C: the run's finally stops every server it started."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autooptimizer.infra.interrupts import sigterm_interrupts
from autooptimizer.infra.net import port_open


def test_sigterm_raises_keyboard_interrupt_inside_and_the_old_handler_comes_back() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"), sigterm_interrupts():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler runs between bytecodes: the sleep is interrupted at once
    assert signal.getsignal(signal.SIGTERM) == before


def test_a_second_sigterm_does_not_interrupt_the_cleanup_the_first_one_started() -> None:
    """`kill` twice (an impatient operator, a supervisor that repeats its TERM) while the soak's finally is still
    stopping its servers (it waits for the event workers, drains the optimizer): a second KeyboardInterrupt there
    skipped the rest of the cleanup and left Prometheus, the search service and the optimizer as orphans."""
    before = signal.getsignal(signal.SIGTERM)
    cleaned = False
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"), sigterm_interrupts():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)  # would be interrupted by a second KeyboardInterrupt
            cleaned = True
    assert cleaned
    assert signal.getsignal(signal.SIGTERM) == before
@pytest.mark.prometheus
def test_a_soak_killed_with_sigterm_stops_everything_it_started(tmp_path: Path) -> None:
    run = tmp_path / "run"
    env = {**os.environ, "AUTOOPT_HOME": str(tmp_path / "home"), "AUTOOPT_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "autooptimizer", "soak", "--scenario", "ci", "--tiny-data",
                             "--speed", "2", "--run-dir", str(run), "--no-evaluate"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    seen: list[str] = []
    deadline = time.monotonic() + 300
    for line in proc.stderr:  # wait until the timeline plays: every server is up
        seen.append(line)
        if "phase " in line or time.monotonic() > deadline:
            break
    assert any("phase " in line for line in seen), seen[-10:]
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=180)
    report = json.loads((run / "soak_report.json").read_text())
    assert report["error"] == "interrupted (SIGTERM)"
    urls = [report["setup"][k] for k in ("search_url", "prometheus_url", "optimizer_url")]
    for url in urls:
        assert not port_open("127.0.0.1", int(url.rsplit(":", 1)[1])), (url, rest[-2000:])
    assert proc.returncode == 1
