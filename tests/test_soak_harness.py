"""The harness's view of the supervised optimizer: the service's pid read from the supervisor's pid file, and a
restart recognised only as a NEW pid that answers its health URL (a real Supervisor, a real child process)."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import pytest

from autooptimizer.infra.net import free_port
from autooptimizer.infra.supervisor import Supervisor
from autooptimizer.soak.harness import read_pid, wait_restarted

CHILD = """
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404); self.end_headers()
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def test_read_pid_reads_a_number_or_nothing(tmp_path: Path) -> None:
    path = tmp_path / "optimizer.pid"
    assert read_pid(path) is None  # missing
    path.write_text("")
    assert read_pid(path) is None
    path.write_text("12x\n")
    assert read_pid(path) is None
    path.write_text("4242\n")
    assert read_pid(path) == 4242


def test_sigkilled_child_is_seen_back_only_with_a_new_pid(tmp_path: Path) -> None:
    port = free_port()
    sup = Supervisor([sys.executable, "-c", CHILD, str(port)], tmp_path, backoff_s=0.2, stop_timeout_s=5)
    runner = threading.Thread(target=sup.run, daemon=True)
    runner.start()
    try:
        pid_file, url = tmp_path / "optimizer.pid", f"http://127.0.0.1:{port}/health"
        first = wait_restarted(url, -1, 60, pid_file)  # any pid: the first start
        assert first is not None and first == read_pid(pid_file)
        os.kill(first, signal.SIGKILL)
        second = wait_restarted(url, first, 60, pid_file)
        assert second is not None and second != first and sup.starts == 2
    finally:
        sup.stop()
        runner.join(30)
    assert not runner.is_alive()


def test_a_run_from_gold_starts_from_golds_default_deployment(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from support.tiny_stack import start_tiny_service

    from autooptimizer.loop.gitops import HelmPatch
    from autooptimizer.loop.release import Release
    from autooptimizer.search import aliases
    from autooptimizer.soak.harness import align_git

    svc = start_tiny_service(tmp_path, monkeypatch, ["gold-v", "bad-v"])
    try:
        aliases.set_alias(aliases.CHAMPION, "bad-v")
        # a warm home's leftovers: another model at the remedies' bounds
        Release().deploy(HelmPatch(model_version="bad-v", replicas=8, rerank_depth=10), "earlier run")
        out = align_git("gold-v", reset_champion=True)
        assert out["committed"] and out["was"] == {"model_version": "bad-v", "canary_weight": 0.0, "replicas": 8,
                                                   "rerank_depth": 10}
        assert Release().git.read_patch() == HelmPatch(model_version="gold-v")
        assert aliases.get_alias(aliases.CHAMPION) == "gold-v" and out["champion_was"] == "bad-v"
        assert align_git("gold-v", reset_champion=True)["committed"] is False  # already there: no commit
        # `current` keeps git's shape, only the model changes
        Release().deploy(HelmPatch(model_version="bad-v", replicas=4), "operator")
        align_git("gold-v", reset_champion=False)
        assert Release().git.read_patch() == HelmPatch(model_version="gold-v", replicas=4)
    finally:
        svc.stop()


def test_the_soak_profile_compresses_the_retention_ages_with_the_speed(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A simulated week at speed 720 is 840 wall seconds: the feedback log keeps what the soak's time says, as the
    scheduler interval is compressed (else a month never reaches the age limit and the log grows all run)."""
    from autooptimizer.profiles import load_profile
    from autooptimizer.soak.harness import soak_profile_dir
    from autooptimizer.soak.scenario import load_scenario

    scenario = load_scenario("month", check_data=False)
    monkeypatch.delenv("AUTOOPT_PROFILES_DIR", raising=False)
    prod = load_profile("prod").retention
    days = prod.feedback_log_days
    assert days is not None
    out = soak_profile_dir("prod", scenario, 720, tmp_path / "profiles")
    monkeypatch.setenv("AUTOOPT_PROFILES_DIR", str(out))
    soak = load_profile("prod")
    assert soak.retention.feedback_log_days == pytest.approx(days / 720, rel=1e-6)
    assert soak.retention.feedback_log_days * 86400 == pytest.approx(days * 120, rel=1e-6)
    assert soak.retention.max_age_days is None, "an age the profile does not set stays unset"
    assert soak.loop.interval_minutes == pytest.approx(scenario.schedule_every / 720 / 60, abs=1e-4)
    assert soak.retention.feedback_log_mb == prod.feedback_log_mb, "a size is not a time"
