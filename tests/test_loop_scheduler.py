"""The scheduler: off in dev, ticks every interval when on, and a tick during a running cycle is skipped."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from autooptimizer.loop.cycle import CycleRunner
from autooptimizer.loop.scheduler import Scheduler
from autooptimizer.loop.testing import TinyService, make_versions
from autooptimizer.profiles import load_profile
from autooptimizer.settings import get_settings


@pytest.fixture()
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TinyService]:
    monkeypatch.setenv("AUTOOPT_PROMETHEUS_URL", "http://127.0.0.1:9")
    make_versions(["v-a"])
    svc = TinyService(tmp_path, "v-a")
    monkeypatch.setenv("AUTOOPT_SEARCH_PORT", str(svc.server.port))
    get_settings.cache_clear()
    yield svc
    svc.stop()


def test_profiles_decide_the_scheduler() -> None:
    assert Scheduler(CycleRunner(profile=load_profile("dev"))).enabled is False
    assert Scheduler(CycleRunner(profile=load_profile("staging"))).enabled is True
    prod = Scheduler(CycleRunner(profile=load_profile("prod")))
    assert prod.enabled and prod.interval_s == 60 * load_profile("prod").loop.interval_minutes
    assert Scheduler(CycleRunner(profile=load_profile("dev"))).start().next_cycle_in_minutes() is None


def test_scheduler_runs_cycles_on_its_interval(service: TinyService) -> None:
    runner = CycleRunner()
    sched = Scheduler(runner, interval_minutes=0.01, enabled=True).start()  # every 0.6 s
    try:
        assert 0 < sched.next_cycle_in_minutes() <= 0.01
        deadline = time.monotonic() + 30
        while len([c for c in runner.journal.list() if c.status != "running"]) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        sched.stop()
        runner.wait(30)
    done = [c for c in runner.journal.list() if c.status != "running"]
    assert len(done) >= 2 and all(c.trigger == "schedule" for c in done)
    assert all(c.outcome == "no_action" for c in done)  # no Prometheus: no gate fires, nothing changes
    assert sched.ticks >= 2
