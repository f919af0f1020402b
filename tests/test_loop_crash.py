"""Kill the cycle's process mid-cycle (SIGKILL); a restart aborts it safely and the deployed state stays consistent:
what the service serves equals what git says, and both equal the state before the cycle."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.tiny_stack import start_tiny_service

from autooptimizer.loop.cycle import CycleOptions, CycleRunner
from autooptimizer.loop.gitops import HelmPatch
from autooptimizer.loop.journal import Journal
from autooptimizer.loop.release import Release
from autooptimizer.settings import get_settings
from autooptimizer.testing import TinyService


@pytest.fixture()
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TinyService]:
    svc = start_tiny_service(tmp_path, monkeypatch, ["v-a", "v-b"])
    Release().current()  # adopt the serving state as the GitOps baseline
    yield svc
    svc.stop()


def _start_cycle(args: list[str], pause_at: str | None = None, marker: Path | None = None) -> subprocess.Popen[bytes]:
    """`autoopt trigger ARGS` in a child process; with `pause_at`, the child stops dead at that checkpoint (through
    the crash suite's child driver, which installs a checkpoint hook) and writes `marker`."""
    if pause_at:
        import json

        opts = {"gate": args[args.index("--gate") + 1]}
        cmd = [sys.executable, "-m", "autooptimizer.reliability.pause_child", "--at", pause_at, "--marker",
               str(marker), "--plan", json.dumps({"options": opts, "means": None})]
    else:
        cmd = [sys.executable, "-c", "from autooptimizer.cli import main; main()", "trigger", *args]
    return subprocess.Popen(cmd, env={**os.environ}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)


def _wait_for(cond, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(f"cycle process exited early: {proc.stdout.read().decode()[-3000:]}")
        assert time.monotonic() < deadline, "timed out waiting for the cycle to reach the kill point"
        time.sleep(0.1)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL


def test_kill_between_commit_and_apply_is_reverted(service: TinyService, autoopt_home: Path) -> None:
    marker = autoopt_home / "paused"
    proc = _start_cycle(["--gate", "p95_latency"], pause_at="deploy:after_commit", marker=marker)
    _wait_for(marker.exists, proc)
    _kill(proc)
    # the half-done deploy: git says 2 replicas, the service still runs 1
    rel = Release()
    assert rel.git.read_patch().replicas == 2 and service.service.replicas == 1
    [stale] = Journal(get_settings()).running()
    assert stale.deploy_dirty and stale.safe_patch["replicas"] == 1

    aborted = CycleRunner().recover()  # what a restart does first
    assert [c.id for c in aborted] == [stale.id]
    rec = Journal(get_settings()).get(stale.id)
    assert rec.status == "aborted" and rec.outcome == "aborted" and not rec.deploy_dirty
    assert any(s.data.get("interrupted") for s in rec.steps)
    ok, patch, state = rel.consistent()
    assert ok and patch == HelmPatch(model_version="v-a", replicas=1) and state.replicas == 1
    assert rel.git.log()[0].reverts is not None  # undone with a git revert, history kept
    assert "AutoOptCycleAborted" in (autoopt_home / "loop" / "alerts.jsonl").read_text()
    # and the loop works again
    assert CycleRunner().run(CycleOptions(gate="p95_latency")).outcome == "scaled"
    assert service.service.replicas == 2 and rel.consistent()[0]


def test_kill_during_ab_test_removes_the_canary(service: TinyService, autoopt_home: Path) -> None:
    # no traffic reaches the service, so the A/B step waits for samples: kill it there, with the canary live
    proc = _start_cycle(["--gate", "ndcg_drop", "--challenger", "v-b"])
    journal = Journal(get_settings())

    def in_ab() -> bool:
        running = journal.running()
        return bool(running) and any(s.name == "ab_test" and s.status == "started" for s in running[0].steps)

    _wait_for(in_ab, proc)
    assert service.service.routing.canary is not None and service.service.routing.canary.version == "v-b"
    _kill(proc)

    CycleRunner().recover()
    ok, patch, _ = Release().consistent()
    assert ok and patch == HelmPatch(model_version="v-a")
    assert service.service.routing.stable.version == "v-a" and service.service.routing.canary is None
    assert journal.list(1)[0].outcome == "aborted"


def test_a_live_cycle_is_not_recovered_from_under_itself(service: TinyService, autoopt_home: Path) -> None:
    marker = autoopt_home / "paused"
    proc = _start_cycle(["--gate", "p95_latency"], pause_at="deploy:after_commit", marker=marker)
    try:
        _wait_for(marker.exists, proc)
        assert CycleRunner().recover() == []  # the lock is held by a live process: nothing is stale
        assert CycleRunner().trigger(CycleOptions(gate="cost_budget")) is None
        assert Journal(get_settings()).running()[0].status == "running"
    finally:
        _kill(proc)
