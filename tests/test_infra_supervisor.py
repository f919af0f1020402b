"""The supervisor (infra/supervisor.py, `autoopt serve --supervise`): a SIGKILLed service comes back by itself and
its successor recovers the cycle it left running; a clean exit is not restarted; quick deaths back off and give up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from autooptimizer.infra.net import free_port
from autooptimizer.infra.supervisor import Supervisor
from autooptimizer.settings import get_settings


def _wait(pred, timeout: float = 60.0, what: str = "condition"):  # noqa: ANN001, ANN202 - a test helper
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"gave up waiting for {what}")


def _pid(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return None


def _events(run_dir: Path) -> list[dict]:
    path = run_dir / "supervisor.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def test_a_killed_child_is_restarted_and_a_stop_ends_both(tmp_path: Path) -> None:
    sup = Supervisor([sys.executable, "-c", "import time; time.sleep(600)"], tmp_path, backoff_s=0.05)
    t = threading.Thread(target=sup.run, daemon=True)
    t.start()
    first = _wait(lambda: _pid(sup.pid_file), what="the first child")
    os.kill(first, signal.SIGKILL)
    second = _wait(lambda: (p := _pid(sup.pid_file)) != first and p, what="a restarted child")
    assert second != first and sup.starts == 2
    sup.stop()
    t.join(30)
    assert not t.is_alive() and sup.child is not None and sup.child.poll() is not None
    events = _events(tmp_path)
    assert [(e["event"], e.get("signal")) for e in events] == [
        ("start", None), ("exit", "SIGKILL"), ("start", None), ("exit", "SIGTERM")]
    assert int((tmp_path / "supervisor.pid").read_text()) == os.getpid()


def test_a_clean_exit_is_not_restarted_and_quick_deaths_give_up(tmp_path: Path) -> None:
    ok = Supervisor([sys.executable, "-c", "pass"], tmp_path / "ok", backoff_s=0.01)
    assert ok.run() == 0 and ok.starts == 1
    bad = Supervisor([sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "bad", backoff_s=0.01,
                     max_backoff_s=0.04, max_restarts=3)
    assert bad.run() == 3 and bad.starts == 4, "the first start and 3 restarts"


def test_serve_supervise_brings_a_sigkilled_service_back_and_recovers_its_cycle(tmp_path: Path) -> None:
    from autooptimizer.loop.journal import Journal

    port = free_port()
    home = get_settings().home
    run_dir = home / "run"
    proc = subprocess.Popen([sys.executable, "-m", "autooptimizer", "serve", "--supervise", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    health = f"http://127.0.0.1:{port}/api/v1/optimizer/health"

    def healthy() -> bool:
        try:
            return httpx.get(health, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        _wait(healthy, 120, "the service")
        first = _pid(run_dir / "optimizer.pid")
        assert first is not None and first != proc.pid
        journal = Journal(get_settings())
        left = journal.new_cycle(trigger="test", env="dev")  # a cycle the service was running when it died
        os.kill(first, signal.SIGKILL)
        second = _wait(lambda: (p := _pid(run_dir / "optimizer.pid")) != first and p, 60, "a restarted service")
        _wait(healthy, 120, "the restarted service")
        rec = _wait(lambda: (r := journal.get(left.id)).status != "running" and r, 60, "the recovery")
        assert (rec.status, rec.outcome) == ("aborted", "aborted") and "interrupted" in rec.summary["reason"]
        assert second != first and proc.poll() is None, "the supervisor itself lives on"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail("the supervisor did not stop on SIGTERM")
    assert [e["event"] for e in _events(run_dir)][:3] == ["start", "exit", "start"]
