"""The scheduler: off in dev, ticks every interval when on, and a tick during a running cycle is skipped."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from autooptimizer.gates import GATE_NAMES, Evidence, Gate, GateReport
from autooptimizer.loop.cycle import GATE_PRIORITY, CycleOptions, CycleRunner
from autooptimizer.loop.scheduler import Scheduler
from autooptimizer.profiles import load_profile
from autooptimizer.settings import get_settings
from autooptimizer.testing import TinyService


def test_profiles_decide_the_scheduler() -> None:
    assert Scheduler(CycleRunner(profile=load_profile("dev"))).enabled is False
    assert Scheduler(CycleRunner(profile=load_profile("staging"))).enabled is True
    prod = Scheduler(CycleRunner(profile=load_profile("prod")))
    assert prod.enabled and prod.interval_s == 60 * load_profile("prod").loop.interval_minutes
    assert Scheduler(CycleRunner(profile=load_profile("dev"))).start().next_cycle_in_minutes() is None


def test_scheduler_runs_cycles_on_its_interval(tiny_service: TinyService) -> None:
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


# -- a gate starts a cycle only after N consecutive firing readings ------------------------------------------------
class RecordingRunner:
    """Stands in for CycleRunner: records the options each start would run with; `busy` refuses starts."""

    def __init__(self, profile_name: str = "prod") -> None:
        self.profile = load_profile(profile_name)
        self.started: list[CycleOptions] = []
        self.busy = False
        self.outcomes: dict[str, str] = {}  # cycle id -> outcome, as the journal would answer
        self.journal = self

    def find(self, cycle_id: str) -> SimpleNamespace | None:
        if cycle_id not in self.outcomes:
            return None
        opts = self.started[int(cycle_id.removeprefix("si_")) - 1]
        path = opts.gate or next((g for g in GATE_PRIORITY if g in (opts.act_on or [])), None)  # what it took
        return SimpleNamespace(outcome=self.outcomes[cycle_id], gate=path)

    def recover(self) -> list:
        return []

    def trigger(self, options: CycleOptions) -> str | None:
        if self.busy:
            return None
        self.started.append(options)
        return f"si_{len(self.started)}"


def _reading(**status: str) -> GateReport:
    return GateReport(gates=[Gate(name=n, status=status.get(n, "ok"), value=None, threshold=1.0,
                                  evidence=Evidence(promql="x")) for n in GATE_NAMES])


def test_prod_needs_n_consecutive_firing_readings() -> None:
    runner = RecordingRunner("prod")
    sched = Scheduler(runner)  # type: ignore[arg-type]
    n = runner.profile.gates.consecutive_readings
    assert n >= 2
    for _ in range(n - 1):
        assert sched.observe(_reading(ndcg_drop="firing")) is None
    assert runner.started == []
    assert sched.observe(_reading(ndcg_drop="firing")) == "si_1"
    assert runner.started == [CycleOptions(trigger="gate", gate="ndcg_drop")]
    assert sched.streaks.streak["ndcg_drop"] == 0  # counting starts again after a start
    assert sched.observe(_reading(ndcg_drop="firing")) is None and len(runner.started) == 1


@pytest.mark.parametrize("breaker", ["ok", "unknown"])
def test_an_ok_or_unknown_reading_restarts_the_count(breaker: str) -> None:
    runner = RecordingRunner("prod")
    sched = Scheduler(runner)  # type: ignore[arg-type]
    n = runner.profile.gates.consecutive_readings
    flapping = (["firing"] * (n - 1) + [breaker]) * 5  # the incident: firing on most readings, never N in a row
    assert [sched.observe(_reading(ndcg_drop=s)) for s in flapping] == [None] * len(flapping)
    assert runner.started == [] and sched.readings == len(flapping)


def test_priority_and_a_busy_runner() -> None:
    runner = RecordingRunner("prod")
    runner.busy = True
    sched = Scheduler(runner)  # type: ignore[arg-type]
    n = runner.profile.gates.consecutive_readings
    for _ in range(n):
        assert sched.observe(_reading(ndcg_drop="firing", retries="firing")) is None  # busy: nothing started
    assert sched.streaks.confirmed() == ["ndcg_drop", "retries"]
    runner.busy = False
    assert sched.observe(_reading(ndcg_drop="firing", retries="firing")) == "si_1"  # next reading, once free
    assert runner.started[0].gate == "retries"  # the cycle's priority: errors before quality
    assert sched.streaks.confirmed() == ["ndcg_drop"]


def test_a_gate_whose_cycle_found_no_remedy_waits_for_the_interval_tick() -> None:
    """A shortfall that persists (the anchored NDCG gate after a refused repair) confirms every N readings; once its
    cycle ended no_remedy, the gate is held until the tick (which acts on it) or an ok reading."""
    runner = RecordingRunner("prod")
    sched = Scheduler(runner)  # type: ignore[arg-type]
    n = runner.profile.gates.consecutive_readings
    fire = _reading(ndcg_drop="firing")
    assert [sched.observe(fire) for _ in range(n)][-1] == "si_1"
    runner.outcomes["si_1"] = "no_remedy"
    assert [sched.observe(fire) for _ in range(3 * n)] == [None] * (3 * n)
    assert len(runner.started) == 1 and sched.held == 2 * n + 1  # confirmed again from the n-th reading on
    assert sched.tick() == "si_2"
    assert runner.started[1] == CycleOptions(trigger="schedule", act_on=["ndcg_drop"])  # the tick retries it
    runner.outcomes["si_2"] = "no_remedy"  # the tick's cycle found nothing new either: still held
    assert [sched.observe(fire) for _ in range(n)] == [None] * n and len(runner.started) == 2
    assert sched.tick() == "si_3"
    runner.outcomes["si_3"] = "rejected_offline"  # this time it retrained (new feedback): the hold ends
    assert sched.observe(fire) == "si_4"
    runner.outcomes["si_4"] = "no_remedy"
    for _ in range(n):
        sched.observe(fire)
    assert len(runner.started) == 4  # held again
    sched.observe(_reading())  # an ok reading lifts the hold (and restarts the count)
    assert [sched.observe(fire) for _ in range(n)][-1] == "si_5"


def test_a_held_gate_does_not_block_a_lower_priority_one() -> None:
    """The anchored NDCG gate keeps firing on a shortfall nothing could repair (held after its no_remedy cycle);
    a p95 latency regression confirmed meanwhile gets its cycle at once. Held, ndcg_drop was still picked as the
    highest-priority confirmed gate and the reading returned None: p95 waited for the tick, whose cycle took the
    NDCG path again by priority, so the latency regression went unhandled for as long as the shortfall lasted."""
    runner = RecordingRunner("prod")
    sched = Scheduler(runner)  # type: ignore[arg-type]
    n = runner.profile.gates.consecutive_readings
    assert [sched.observe(_reading(ndcg_drop="firing")) for _ in range(n)][-1] == "si_1"
    runner.outcomes["si_1"] = "no_remedy"
    both = _reading(ndcg_drop="firing", p95_latency="firing")
    assert [sched.observe(both) for _ in range(n)][-1] == "si_2"
    assert runner.started[1] == CycleOptions(trigger="gate", gate="p95_latency")
    assert sched.held >= 1  # ndcg_drop itself stays held
    assert sched.streaks.confirmed() == ["ndcg_drop"]


def test_a_tick_holds_only_the_gate_whose_path_it_took() -> None:
    """Both confirmed; the tick's cycle takes the NDCG path (priority) and finds no remedy: ndcg_drop is held, but
    p95 latency, whose path that cycle never tried, starts its own cycle at the next reading."""
    runner = RecordingRunner("prod")
    sched = Scheduler(runner)  # type: ignore[arg-type]
    runner.busy = True
    n = runner.profile.gates.consecutive_readings
    both = _reading(ndcg_drop="firing", p95_latency="firing")
    for _ in range(n):
        sched.observe(both)
    runner.busy = False
    assert sched.tick() == "si_1" and runner.started[0].act_on == ["ndcg_drop", "p95_latency"]
    runner.outcomes["si_1"] = "no_remedy"
    assert sched.observe(both) == "si_2" and runner.started[1] == CycleOptions(trigger="gate", gate="p95_latency")


@pytest.mark.parametrize("outcome", ["rejected_offline", "ab_inconclusive", "failed", None])
def test_only_no_remedy_holds_a_gate(outcome: str | None) -> None:
    runner = RecordingRunner("prod")
    sched = Scheduler(runner)  # type: ignore[arg-type]
    n = runner.profile.gates.consecutive_readings
    fire = _reading(p95_latency="firing")
    for _ in range(n):
        sched.observe(fire)
    if outcome is not None:  # None: the journal does not know the cycle (still running elsewhere, another home)
        runner.outcomes["si_1"] = outcome
    assert [sched.observe(fire) for _ in range(n)][-1] == "si_2" and sched.held == 0


def test_interval_cycle_may_act_only_on_confirmed_gates() -> None:
    runner = RecordingRunner("prod")
    sched = Scheduler(runner, read_interval_s=1)  # type: ignore[arg-type]
    sched.observe(_reading(p95_latency="firing"))  # one reading: not confirmed
    assert sched.tick() == "si_1" and runner.started[0] == CycleOptions(trigger="schedule", act_on=[])


def test_the_loop_reads_gates_on_its_cadence() -> None:
    runner = RecordingRunner("prod")
    n = runner.profile.gates.consecutive_readings
    readings: list[int] = []

    def read() -> GateReport:
        readings.append(1)
        return _reading(cost_budget="firing")

    sched = Scheduler(runner, enabled=True, read_interval_s=1, read_gates=read).start()  # type: ignore[arg-type]
    try:
        deadline = time.monotonic() + 30
        while not runner.started and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        sched.stop()
    assert runner.started and runner.started[0] == CycleOptions(trigger="gate", gate="cost_budget")
    assert sched.gate_cycles == ["si_1"] and len(readings) >= n


def test_a_schedule_cycle_ignores_an_unconfirmed_firing_gate(tiny_service: TinyService, monkeypatch) -> None:
    """The real cycle: with act_on=[] a firing p95 gate is seen (journaled) but starts nothing; confirmed, it scales."""
    from fake_prometheus import FakeProm, vector

    prom = FakeProm(lambda q: (200, vector(5000.0)))  # every value and every count: far above the thresholds
    monkeypatch.setenv("AUTOOPT_PROMETHEUS_URL", prom.url)
    get_settings.cache_clear()
    try:
        rec = CycleRunner().run(CycleOptions(trigger="schedule", act_on=[]))
        assert rec.outcome == "no_action" and rec.summary["gates"]["p95_latency"] == "firing"
        rec = CycleRunner().run(CycleOptions(trigger="schedule", act_on=["p95_latency"]))
        assert rec.outcome == "scaled"
    finally:
        prom.close()


# -- a failed cycle ends cleanly and the next scheduled one starts ---------------------------------------------------
class FailingRunner(CycleRunner):
    """A real CycleRunner (journal, lock, recovery, the gated registry) whose cycle bodies fail as the paths do, in
    turn: a tool error, a step the PDP denies, an inconclusive A/B; then a cycle with nothing to do."""

    def __init__(self) -> None:
        super().__init__()
        self.kinds = ["error", "denied", "ab_inconclusive", "ok"]

    def _body(self, cid: str, opts: CycleOptions, state) -> tuple[str, str]:  # noqa: ANN001
        from autooptimizer.loop.cycle_types import CycleStop
        from autooptimizer.search import aliases

        kind = self.kinds.pop(0) if self.kinds else "ok"
        if kind == "error":
            self.step(cid, "train", lambda: 1 / 0)  # any exception inside a step
        if kind == "denied":  # the real PDP: gold cannot be deleted, whatever the env
            self.step(cid, "delete", lambda: self.tool(state, "ml", "delete_model",
                                                       {"version": aliases.require_alias(aliases.GOLD)}))
        if kind == "ab_inconclusive":
            raise CycleStop("ab_inconclusive", "A/B verdict inconclusive: too few samples")
        return "no_action", "nothing to do"


def test_the_scheduler_goes_on_after_each_kind_of_failed_cycle(tiny_service: TinyService) -> None:
    from autooptimizer.search import aliases

    aliases.set_alias(aliases.GOLD, "v-a")
    runner = FailingRunner()
    sched = Scheduler(runner, interval_minutes=0.005, enabled=True, read_gates=lambda: _reading()).start()
    try:
        deadline = time.monotonic() + 60
        while len([c for c in runner.journal.list() if c.status != "running"]) < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        sched.stop()
        runner.wait(30)
    done = sorted(runner.journal.list(), key=lambda c: c.id)[:4]
    assert [(c.status, c.outcome) for c in done] == [("failed", "failed"), ("finished", "denied"),
                                                     ("finished", "ab_inconclusive"), ("finished", "no_action")]
    assert "ZeroDivisionError" in (done[0].error or "") and "shared.gold-immutable" in str(done[1].summary)
    assert all(c.trigger == "schedule" for c in done) and sched.ticks >= 4
    assert not runner.lock.held_elsewhere() and runner.current_cycle is None, "each failure released the lock"
    assert aliases.get_alias(aliases.GOLD) == "v-a"


def test_a_tick_that_cannot_start_a_cycle_does_not_stop_the_scheduler() -> None:
    class Broken(RecordingRunner):
        def trigger(self, options: CycleOptions) -> str | None:
            if not self.started:
                self.started.append(options)
                raise OSError("journal.db is locked")
            return super().trigger(options)

    runner = Broken("prod")
    sched = Scheduler(runner, interval_minutes=0.005, enabled=True,  # type: ignore[arg-type]
                      read_gates=lambda: _reading()).start()
    try:
        deadline = time.monotonic() + 30
        while len(runner.started) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        sched.stop()
    assert len(runner.started) >= 3 and sched.skipped >= 1, "the failed start was counted, later ticks started"
