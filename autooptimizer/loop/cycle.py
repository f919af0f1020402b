"""One optimization cycle, from the gates to a watched deployment, journaled step by step.

    monitor (metrics agent: check_quality_gates) -> the supervisor picks the specialists for the fired gate
    (`plan_for`: loop/remedies.py's table, which the chat planner reads too) -> the gate's path (loop/paths/):
      ndcg_drop:   the retrain pipeline (ml/pipeline.py: data then ml agent) -> devops: deploy_canary,
                   start_ab_test, promote_model -> watch -> rollback?                          paths/release.py
      p95_latency: devops: scale_service (double, up to 8), then switch_variant once at 8     paths/scaling.py
      cost_budget: devops: switch_variant (cheaper: half the rerank depth, at least 10)        paths/scaling.py
      retries:     diagnostic report, then rollback_deployment when a recent deploy is suspect, else a restart
                                                                                               paths/errors.py
      deploy_watch: watch the current deployment against the one before it; rollback_deployment on degradation
                                                                                               paths/watch.py
    Before any gate's path, a deploy the loop did not make (git's stable version is not `champion` and the commit
    that made it carries no cycle id, an operator's) that no cycle watched is watched first against the champion
    and rolled back on degradation (paths/watch.py `unwatched_deploy`): its bad model may be why a gate fires.

Every action is a registry call (the PDP decides, the audit log records it with the cycle id), inside one trace per
cycle. Only one cycle runs at a time (CycleLock). A cycle that stops early (denied, failed, killed, crashed) has its
deployment changes undone: `Release.restore` reverts its commits and re-applies the safe point. `recover()` does
that for cycles a dead process left `running`. Artifacts go to AUTOOPT_HOME/artifacts/<cycle id>/; the cycle's
typed state (`CycleState`) is its journal summary.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, cast

from autooptimizer.errors import AutoOptError, InputError
from autooptimizer.loop.abtest import SampleSource
from autooptimizer.loop.alerts import raise_alert
from autooptimizer.loop.artifacts import jsonable, write_summary
from autooptimizer.loop.checkpoints import checkpoint
from autooptimizer.loop.cycle_types import (
    CycleOptions,
    CycleState,
    CycleStop,
    Decision,
    RegistryPort,
    ReleasePort,
    StepFailed,
)
from autooptimizer.loop.journal import CycleLock, CycleRecord, CycleStatus, Journal
from autooptimizer.loop.paths.errors import errors_path
from autooptimizer.loop.paths.release import approved_promotions, promote_approved, retrain_path
from autooptimizer.loop.paths.scaling import cost_path, latency_path
from autooptimizer.loop.paths.watch import deploy_watch_path, unwatched_deploy, unwatched_deploy_path
from autooptimizer.loop.remedies import GATE_PRIORITY, GATES, FiredGate, Gate, delegations
from autooptimizer.profiles import Profile, load_profile
from autooptimizer.settings import Settings, get_settings

log = logging.getLogger(__name__)

PathFn = Callable[["CycleRunner", str, CycleOptions, CycleState], tuple[str, str]]
PATHS: dict[Gate, PathFn] = {"ndcg_drop": retrain_path, "p95_latency": latency_path, "cost_budget": cost_path,
                            "retries": errors_path, "deploy_watch": deploy_watch_path}


class CycleBusy(AutoOptError):
    """Another cycle holds the lock."""


def plan_for(gate: str | None) -> list[dict[str, Any]]:
    """The supervisor's delegation for a fired gate (loop/remedies.py): which specialist does what, in order."""
    return [{"agent": d.agent, "tools": list(d.tools)} for d in delegations(gate)]


class CycleRunner:
    """Runs cycles for one AUTOOPT_HOME; shared by the CLI, the scheduler and the API."""

    def __init__(self, settings: Settings | None = None, *, profile: Profile | None = None,
                 release: ReleasePort | None = None, source: SampleSource | None = None,
                 registry: RegistryPort | None = None,
                 on_event: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self.settings = settings or get_settings()
        self.profile = profile or load_profile(self.settings.env)
        self.journal = Journal(self.settings)
        self.lock = CycleLock(self.settings)
        self._release = release
        self._source = source
        self._registry = registry
        self.on_event = on_event
        self.current_cycle: str | None = None
        self._thread: threading.Thread | None = None

    # -- wiring ---------------------------------------------------------------------------------------------------
    @property
    def release(self) -> ReleasePort:
        if self._release is None:
            from autooptimizer.loop.release import Release

            self._release = Release(self.settings, journal=self.journal)
        return self._release

    @property
    def source(self) -> SampleSource:
        if self._source is None:
            from autooptimizer.loop.signals import LiveSource

            self._source = LiveSource(self.settings)
        return self._source

    @property
    def registry(self) -> RegistryPort:
        if self._registry is None:
            from autooptimizer.tools import load_all_tools

            self._registry = load_all_tools()
        return self._registry

    def artifacts_dir(self, cycle_id: str) -> Path:
        """AUTOOPT_HOME/artifacts/<cycle id>/."""
        return self.settings.home / "artifacts" / cycle_id

    def emit(self, kind: str, **data: Any) -> None:
        """Tell the progress hook (`on_event`); a failing hook never breaks a cycle."""
        if self.on_event:
            try:
                self.on_event(kind, data)
            except Exception:  # noqa: BLE001 - progress display must never break a cycle
                log.exception("cycle event hook failed")

    # -- entry points ---------------------------------------------------------------------------------------------
    def run(self, options: CycleOptions | None = None) -> CycleRecord:
        """Run one cycle in this thread; raises CycleBusy when another cycle holds the lock."""
        if not self.lock.acquire():
            raise CycleBusy("Another optimization cycle is running.", "Wait for it (`autoopt history`) and retry.")
        try:
            self._recover_locked()
            rec = self.begin(options or CycleOptions())
            return self._execute(rec.id, options or CycleOptions())
        finally:
            self.lock.release()

    def trigger(self, options: CycleOptions | None = None) -> str | None:
        """Start a cycle in a background thread; returns its id, or None when one is already running."""
        if not self.lock.acquire():
            return None
        try:
            self._recover_locked()
            rec = self.begin(options or CycleOptions())
        except BaseException:
            self.lock.release()
            raise

        def work() -> None:
            try:
                self._execute(rec.id, options or CycleOptions())
            finally:
                self.lock.release()

        self._thread = threading.Thread(target=work, name=f"cycle-{rec.id}", daemon=True)
        self._thread.start()
        return rec.id

    def wait(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def is_running(self) -> bool:
        return self.current_cycle is not None or self.lock.held_elsewhere()

    def recover(self) -> list[CycleRecord]:
        """Abort (and undo the deployment changes of) cycles left `running` by a dead process."""
        if not self.lock.acquire():
            return []  # a live cycle holds the lock: nothing is stale
        try:
            return self._recover_locked()
        finally:
            self.lock.release()

    def _recover_locked(self) -> list[CycleRecord]:
        out: list[CycleRecord] = []
        for rec in self.journal.running():
            reason = f"cycle {rec.id} was interrupted (process {rec.pid} died)"
            restored: dict[str, Any] = {}
            error = None
            try:
                restored = self.release.restore(rec.id, reason) if rec.deploy_dirty else {"restored": False}
            except AutoOptError as exc:
                error = f"restore failed: {exc}"
            for step in rec.steps:
                if step.status == "started":
                    self.journal.step_end(rec.id, step.seq, "failed", {**step.data, "interrupted": True})
            summary = {**rec.summary, "outcome": "aborted", "reason": reason, "recovery": restored}
            done = self.journal.finish(rec.id, "aborted", "aborted", summary=summary, error=error)
            if rec.artifacts_dir:
                write_summary(done)
            raise_alert(self.settings, "AutoOptCycleAborted", reason, labels={"cycle_id": rec.id},
                        details={"recovery": restored, "error": error})
            out.append(done)
        self._retry_failed_restores()
        return out

    def _retry_failed_restores(self) -> None:
        """A cycle whose restore failed (git or the service was unreachable) ended with its deployment changes still
        in place; every later recovery tries again until git and the target are back at its safe point."""
        for rec in self.journal.dirty():
            try:
                restored = self.release.restore(rec.id, f"retry of cycle {rec.id}'s failed restore")
            except AutoOptError as exc:
                log.warning("cycle %s: restore still failing: %s", rec.id, exc)
                continue
            raise_alert(self.settings, "AutoOptRestoreRetried", f"cycle {rec.id} restored on retry",
                        labels={"cycle_id": rec.id}, details={"recovery": restored})

    # -- the cycle ------------------------------------------------------------------------------------------------
    def begin(self, opts: CycleOptions) -> CycleRecord:
        """Open a cycle in the journal (and its summary.json); the caller holds the lock."""
        rec = self.journal.new_cycle(trigger=opts.trigger, env=self.settings.env, gate=opts.gate)
        write_summary(rec)
        return rec

    def _execute(self, cycle_id: str, opts: CycleOptions) -> CycleRecord:
        from autooptimizer.tools.context import trace_scope

        self.current_cycle = cycle_id
        started = time.time()
        state = CycleState(options=opts)
        self.emit("cycle_start", cycle_id=cycle_id)
        try:
            with self._trace(cycle_id, opts) as trace:
                trace_id = getattr(trace, "trace_id", None)
                if trace_id:
                    self.journal.update(cycle_id, trace_id=trace_id)
                with trace_scope(trace_id):
                    status: CycleStatus = "finished"
                    try:
                        outcome, reason = self._body(cycle_id, opts, state)
                    except CycleStop as stop:
                        outcome, reason, status = stop.outcome, stop.reason, stop.status
                        if stop.restore:
                            state.restore = self._restore(cycle_id, reason)
                    except Exception as exc:  # noqa: BLE001 - any failure aborts cleanly
                        outcome, status = "failed", "failed"
                        reason = f"{type(exc).__name__}: {getattr(exc, 'problem', exc)}"
                        state.traceback = traceback.format_exc(limit=8)
                        state.restore = self._restore(cycle_id, reason)
                    if trace is not None and hasattr(trace, "set_outputs"):
                        trace.set_outputs({"outcome": outcome, "reason": reason})
        finally:
            self.current_cycle = None
        if self.profile.retention.after_each_cycle:
            state.retention = self._prune(cycle_id)
        state.outcome, state.reason, state.duration_seconds = outcome, reason, round(time.time() - started, 3)
        rec = self.journal.finish(cycle_id, status, outcome, summary=state.summary(),
                                  error=reason if status == "failed" else None)
        write_summary(rec)
        self.emit("cycle_end", cycle_id=cycle_id, outcome=outcome, reason=reason)
        return rec

    def _prune(self, cycle_id: str) -> dict[str, Any]:
        """The profile's retention policy, as one gated call (devops.prune_storage) after the cycle's outcome is
        known; whatever it answers never changes that outcome. The cycle is still `running` in the journal, so its
        own artifacts and safe point stay protected."""
        try:
            res = self.registry.call("devops", "prune_storage", {}, env=self.settings.env,
                                     requested_by="loop:retention", cycle_id=cycle_id)
        except Exception as exc:  # noqa: BLE001 - retention never breaks a cycle
            log.exception("prune_storage failed")
            return {"decision": "error", "error": f"{type(exc).__name__}: {exc}"}
        raw: object = res.result
        result = cast("dict[str, Any]", raw) if isinstance(raw, dict) else {}
        deleted = cast("list[dict[str, Any]]", result.get("deleted", []))
        return {"decision": res.decision, "policies": res.policies, "error": res.error,
                "deleted": [f"{d.get('kind')}:{d.get('name')}" for d in deleted],
                "bytes_freed": result.get("bytes_freed")}

    def _trace(self, cycle_id: str, opts: CycleOptions) -> AbstractContextManager[Any]:
        try:
            from autooptimizer.tracing.spans import start_trace
        except ImportError:  # tracing not installed: the journal and audit log still record everything
            return nullcontext(None)
        return start_trace(f"cycle {cycle_id}", {"cycle_id": cycle_id, "env": self.settings.env,
                                                 "trigger": opts.trigger}, inputs=opts.model_dump())

    def _span(self, name: str, inputs: Any = None) -> AbstractContextManager[Any]:
        try:
            from autooptimizer.tracing.spans import span
        except ImportError:
            return nullcontext(None)
        return span(name, kind="chain", inputs=inputs)

    def _restore(self, cycle_id: str, reason: str) -> dict[str, Any]:
        try:
            if not self.journal.get(cycle_id, with_steps=False).deploy_dirty:
                return {"restored": False}
            seq = self.journal.step_start(cycle_id, "restore", {"reason": reason})
            res = self.release.restore(cycle_id, reason)
            self.journal.step_end(cycle_id, seq, "done", res)
            return res
        except AutoOptError as exc:
            raise_alert(self.settings, "AutoOptRestoreFailed", f"cycle {cycle_id}: {exc}", severity="critical",
                        labels={"cycle_id": cycle_id})
            return {"restored": False, "error": str(exc)}

    def step(self, cycle_id: str, name: str, fn: Callable[[], Any], inputs: dict[str, Any] | None = None) -> Any:
        """Journal + trace one step around `fn`."""
        seq = self.journal.step_start(cycle_id, name, inputs)
        checkpoint(f"step:{name}:start")
        self.emit("step_start", cycle_id=cycle_id, step=name)
        t0 = time.time()
        with self._span(f"step:{name}", inputs) as sp:
            try:
                out = fn()
            except CycleStop as stop:
                self.journal.step_end(cycle_id, seq, "done" if stop.status == "finished" else "failed",
                                      {"stopped": stop.outcome, "reason": stop.reason})
                raise
            except BaseException as exc:
                self.journal.step_end(cycle_id, seq, "failed", {"error": f"{type(exc).__name__}: {exc}"})
                raise
            if sp is not None:
                sp.set_outputs(jsonable(out))
        self.journal.step_end(cycle_id, seq, "done", _step_data(out))
        checkpoint(f"step:{name}:end")
        self.emit("step_end", cycle_id=cycle_id, step=name, seconds=round(time.time() - t0, 3))
        return out

    def tool(self, state: CycleState, agent: str, name: str, args: dict[str, Any],
             evidence: dict[str, Any] | None = None, approval_id: str | None = None) -> Any:
        """A gated tool call. Deny -> stop the cycle; needs_approval -> stop awaiting a human; error -> raise."""
        res = self.registry.call(agent, name, args, env=self.settings.env, evidence=evidence,
                                 requested_by=f"loop:{agent}", approval_id=approval_id, cycle_id=self.current_cycle,
                                 sample_source=self.source, release=self.release)
        state.decisions.append(Decision(agent=agent, tool=name, decision=res.decision, policies=res.policies,
                                        executed=res.executed, approval_id=res.approval_id))
        if res.decision == "deny":
            raise CycleStop("denied", f"{agent}.{name} denied by policy: {res.reason}")
        if res.decision == "needs_approval":
            raise CycleStop("awaiting_approval", f"{agent}.{name} needs approval: request {res.approval_id} "
                            f"(`autoopt approvals approve {res.approval_id}`)")
        if res.error:
            raise StepFailed(f"{agent}.{name} failed: {res.error}")
        return res.result

    def _body(self, cid: str, opts: CycleOptions, state: CycleState) -> tuple[str, str]:
        """An approved promotion first; else monitor -> supervisor -> the fired gate's path."""
        if opts.gate in (None, "ndcg_drop"):
            approved = approved_promotions(self.settings.env)
            if approved:
                return promote_approved(self, cid, opts, state, approved[0])
        report = self.step(cid, "monitor", lambda: self.tool(state, "metrics", "check_quality_gates",
                                                             {"env": self.settings.env}))
        gate_report = cast("dict[str, Any]", report or {})
        fired: list[str] = gate_report.get("firing", [])
        firing: list[FiredGate] = [g for g in GATE_PRIORITY if g in fired and (opts.act_on is None or g in opts.act_on)]
        gate_rows: list[dict[str, Any]] = gate_report.get("gates", [])
        state.gates = {g["name"]: g["status"] for g in gate_rows}
        if opts.gate and opts.gate != "deploy_watch" and opts.gate not in firing and not self.profile.loop.mock_signals:
            raise CycleStop("no_action", f"gate {opts.gate} is not firing and this profile ({self.profile.name}) "
                            "does not allow mock signals", restore=False)
        found = unwatched_deploy(self)
        if found is not None:  # a deploy nobody watched comes before any remedy: it may be what fired the gate
            self.journal.update(cid, gate="deploy_watch")
            state.gate = "deploy_watch"
            self.step(cid, "supervisor", lambda: {"gate": "deploy_watch", "firing": firing,
                                                  "unwatched_deploy": found.model_dump(),
                                                  "delegates": plan_for("deploy_watch")})
            return unwatched_deploy_path(self, cid, opts, state, found)
        gate: Gate | None = opts.gate or (firing[0] if firing else None)
        self.journal.update(cid, gate=gate)
        state.gate = gate
        plan = plan_for(gate)
        self.step(cid, "supervisor", lambda: {"gate": gate, "firing": firing, "delegates": plan})
        if gate is None:
            return "no_action", "no quality gate is firing"
        return PATHS[gate](self, cid, opts, state)


def validate_gate(name: str | None) -> Gate | None:
    """An operator's --gate, checked against the gates a cycle knows (loop/remedies.py's `Gate`)."""
    if name in (None, ""):
        return None
    for gate in GATES:
        if gate == name:
            return gate
    raise InputError(f"Unknown gate {name!r}.", f"Use one of {', '.join(GATES)}.")


def _step_data(out: Any) -> dict[str, Any]:
    """What the journal keeps of a step's result: the result itself when it is a mapping, else under `result`."""
    return cast("dict[str, Any]", jsonable(out)) if isinstance(out, dict) else {"result": out}


__all__ = ["GATE_PRIORITY", "PATHS", "CycleBusy", "CycleOptions", "CycleRunner", "CycleState", "CycleStop", "Gate",
           "StepFailed", "plan_for", "validate_gate"]
