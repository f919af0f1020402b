"""When the profile enables the scheduler (off in dev: cycles on demand), it does two things in one thread:

- reads the quality gates every `gates.readIntervalSeconds` and starts a cycle for a gate only once it has fired on
  `gates.consecutiveReadings` readings in a row (`GateStreaks`; an ok or unknown reading resets the streak). One noisy
  reading never starts a retrain: at 2 req/s the NDCG gate fired on 43 of 68 single readings with no real change.
- runs a cycle every `loop.intervalMinutes` for the work that is not gate-driven (promotions a human approved).
  Such a cycle acts only on gates confirmed by the streaks (`CycleOptions.act_on`), never on its own single reading.
- holds a gate whose last cycle (gate-started, or the tick that acted on it) ended `no_remedy` (nothing could be
  done: remedies at their bounds, no new feedback to retrain on) until the next interval tick or an ok reading: a
  shortfall that persists (the anchored NDCG gate after a refused repair) would otherwise start an identical no-op
  cycle at every confirmation (~25 s in prod). A held gate is passed over, so a lower-priority gate confirmed
  meanwhile (p95 latency) still starts its cycle.
  The tick still acts on the confirmed gate, so the loop retries once per interval, when new feedback may have come.
- keeps the NDCG gate's anchor (loop/anchor.py): each reading compares with it, and a healthy reading while no
  cycle runs sets it when none exists for the current champion. It is the anchor's only automatic writer.

A start that finds a cycle already running is skipped, not queued (the cycle lock decides), so a slow cycle never
causes a pile-up; a confirmed gate stays confirmed and starts its cycle at the next reading after the lock frees.
Operator-started cycles (`autoopt trigger`, the API) are not affected. On start it recovers cycles a dead process
left `running` before the first tick.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from autooptimizer.gates import GateName, GateReport, GateStreaks
from autooptimizer.loop.anchor import AnchorStore
from autooptimizer.loop.cycle import GATE_PRIORITY, CycleOptions, CycleRunner, FiredGate

log = logging.getLogger(__name__)


class Scheduler:
    def __init__(self, runner: CycleRunner, *, interval_minutes: float | None = None,
                 enabled: bool | None = None, read_interval_s: float | None = None,
                 read_gates: Callable[[], GateReport] | None = None, anchor: AnchorStore | None = None) -> None:
        loop, gates = runner.profile.loop, runner.profile.gates
        self.runner = runner
        self._anchor = anchor
        self.enabled = loop.scheduler if enabled is None else enabled
        self.interval_s = 60.0 * (interval_minutes or loop.interval_minutes)
        self.read_interval_s = read_interval_s or gates.read_interval_seconds
        self.read_gates = read_gates or self._read_gates
        self.streaks = GateStreaks(required=gates.consecutive_readings)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_at: float | None = None
        self._next_read_at: float | None = None
        self.ticks = 0
        self.skipped = 0
        self.readings = 0
        self.gate_cycles: list[str] = []
        self._last_gate_cycle: dict[str, str] = {}  # gate -> its last gate-started cycle (the no_remedy hold)
        self.held = 0  # confirmations not acted on because of the hold

    @property
    def anchor(self) -> AnchorStore:
        """The NDCG anchor of the runner's AUTOOPT_HOME (built on first use); a champion change settles once both
        gate windows lie after it."""
        if self._anchor is None:
            gates = self.runner.profile.gates
            self._anchor = AnchorStore.for_settings(
                self.runner.settings, settle_seconds=gates.window_seconds + gates.baseline_window_seconds)
        return self._anchor

    def _read_gates(self) -> GateReport:
        from autooptimizer.gates import evaluate_gates

        return evaluate_gates(prometheus_url=self.runner.settings.prometheus_url, env=self.runner.settings.env,
                              profile=self.runner.profile, anchor=self.anchor.read())

    def start(self) -> Scheduler:
        self.runner.recover()
        if self.enabled and self._thread is None:
            self._next_at = time.time() + self.interval_s
            self._next_read_at = time.time() + self.read_interval_s
            self._thread = threading.Thread(target=self._loop, name="autoopt-scheduler", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def next_cycle_in_minutes(self) -> float | None:
        if not self.enabled or self._next_at is None:
            return None
        return round(max(0.0, self._next_at - time.time()) / 60.0, 3)

    # -- the two duties ---------------------------------------------------------------------------------------------
    def observe(self, report: GateReport) -> str | None:
        """Count one gate reading; start a cycle for the highest-priority confirmed gate. Returns its cycle id, or
        None (nothing confirmed, or a cycle is running: the streak stays, so the next reading tries again)."""
        self.readings += 1
        self._keep_anchor(report)
        confirmed = self.streaks.update(report)
        for g in report.gates:
            if g.status == "ok":
                self._last_gate_cycle.pop(g.name, None)
        ordered: list[GateName] = [p for p in GATE_PRIORITY if p in confirmed]  # by priority
        held = [g for g in ordered if self._held(g)]
        if held:
            self.held += 1
            log.info("gate(s) %s confirmed but held: their last cycle ended no_remedy; the next interval tick retries",
                     ", ".join(held))
        # a held gate never blocks a lower-priority one (a p95 regression during a shortfall nothing can repair)
        gate: GateName | None = next((g for g in ordered if g not in held), None)
        if gate is None:
            return None
        streak = self.streaks.streak[gate]
        cid = self.runner.trigger(CycleOptions(trigger="gate", gate=gate))
        if cid is None:
            log.info("gate %s confirmed (%d readings) but a cycle is running; retrying at the next reading",
                     gate, streak)
            return None
        log.info("gate %s fired on %d consecutive readings: started cycle %s", gate, streak, cid)
        self.streaks.reset(gate)
        self.gate_cycles.append(cid)
        self._last_gate_cycle[gate] = cid
        return cid

    def _held(self, gate: str) -> bool:
        """True while `gate`'s last cycle took `gate`'s path and ended `no_remedy` (a running or unreadable one holds
        nothing: the cycle lock already keeps a second one from starting). A tick acts on every confirmed gate but
        takes the highest-priority path: the others it did not try stay free."""
        cid = self._last_gate_cycle.get(gate)
        if cid is None:
            return False
        rec = self.runner.journal.find(cid)
        return rec is not None and rec.outcome == "no_remedy" and rec.gate in (None, gate)

    def _keep_anchor(self, report: GateReport) -> None:
        """Let the anchor store act on a reading that compared with it (loop/anchor.py: set, or start a re-anchor)."""
        ndcg = next((g for g in report.gates if g.name == "ndcg_drop"), None)
        if ndcg is None or ndcg.evidence.anchor is None or ndcg.evidence.anchor.state == "not_given":
            return
        try:
            written = self.anchor.observe(report, busy=self.runner.is_running())
        except Exception:  # noqa: BLE001 - a failed anchor write must not stop the gates from acting
            log.exception("NDCG anchor update failed")
            return
        if written is not None:
            log.info("NDCG anchor for %s: %s (%s)", written.champion, written.ndcg10, written.how)

    def tick(self) -> str | None:
        """The interval cycle: approved promotions, and only confirmed gates may start a path."""
        self.ticks += 1
        act_on: list[FiredGate] = [*self.streaks.confirmed()]
        started = self.runner.trigger(CycleOptions(trigger="schedule", act_on=act_on))
        if started is None:
            self.skipped += 1
            log.info("scheduled tick skipped: a cycle is already running")
            return None
        for gate in act_on:  # the tick is the retry the no_remedy hold waits for: its outcome holds the gate again
            self._last_gate_cycle[gate] = started
        return started

    def _loop(self) -> None:
        while not self._stop.is_set():
            now = time.time()
            due = min(self._next_at or now, self._next_read_at or now)
            if self._stop.wait(max(0.0, due - now)):
                return
            now = time.time()
            if now >= (self._next_read_at or now):
                self._next_read_at = now + self.read_interval_s
                try:
                    self.observe(self.read_gates())
                except Exception:  # noqa: BLE001 - the scheduler must outlive one bad reading
                    self.streaks.reset()  # a reading that failed is an unknown one
                    log.exception("gate reading failed")
            if now >= (self._next_at or now):
                self._next_at = now + self.interval_s
                try:
                    self.tick()
                except Exception:  # noqa: BLE001 - the scheduler must outlive one bad cycle start
                    self.skipped += 1
                    log.exception("scheduled cycle failed to start")
