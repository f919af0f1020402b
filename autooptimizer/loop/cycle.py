"""One optimization cycle, from the gates to a watched deployment, journaled step by step.

    monitor (metrics agent: check_quality_gates) -> the supervisor picks the specialists for the fired gate ->
      ndcg_drop:   data: build_dataset, explain_reranker, augment_dataset -> ml: train_reranker, register_model,
                   evaluate_model -> devops: deploy_canary, start_ab_test, promote_model -> watch -> rollback?
      p95_latency: devops: scale_service (then switch_variant to a smaller rerank depth once at the ceiling)
      cost_budget: devops: switch_variant (cheaper: smaller rerank depth)
      retries:     diagnostic report, then rollback_deployment when a recent deploy is suspect, else a restart
      deploy_watch: watch the current deployment against the one before it; rollback_deployment on degradation

Every action is a registry call (the PDP decides, the audit log records it with the cycle id), inside one trace per
cycle. Only one cycle runs at a time (CycleLock). A cycle that stops early (denied, failed, killed, crashed) has its
deployment changes undone: `Release.restore` reverts its commits and re-applies the safe point. `recover()` does
that for cycles a dead process left `running`. Artifacts go to AUTOOPT_HOME/artifacts/<cycle id>/.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import traceback
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from autooptimizer.errors import AutoOptError, InputError
from autooptimizer.loop.abtest import ABConfig, SampleSource
from autooptimizer.loop.alerts import raise_alert
from autooptimizer.loop.checkpoints import checkpoint
from autooptimizer.loop.journal import CycleLock, CycleRecord, Journal
from autooptimizer.profiles import Profile, load_profile
from autooptimizer.settings import Settings, get_settings

log = logging.getLogger(__name__)

Gate = Literal["ndcg_drop", "p95_latency", "cost_budget", "retries", "deploy_watch"]
GATE_PRIORITY: tuple[str, ...] = ("retries", "ndcg_drop", "p95_latency", "cost_budget")
MAX_REPLICAS = 8
MIN_RERANK_DEPTH = 10


class CycleOptions(BaseModel):
    """How to run one cycle. `gate` forces the path (an operator's on-demand action, or mock signals in dev)."""

    trigger: str = "manual"
    gate: Gate | None = None
    challenger: str | None = Field(None, description="an existing model version to A/B instead of training one")
    domain_data: str | None = Field(None, description="the shifted domain's BEIR folder/name for retraining "
                                    "(default: the dataset most recent feedback comes from)")
    original: str = Field("scifact", description="the original domain: its `test` split guards promotion")
    ab_min_samples: int | None = Field(None, ge=2)
    ab_max_duration_seconds: float | None = Field(None, gt=0)
    watch_seconds: float | None = Field(None, gt=0)
    seed: int = 0
    act_on: list[Gate] | None = Field(None, description="firing gates that may start a path (the scheduler passes "
                                      "those confirmed on gates.consecutiveReadings readings); None = any firing gate")


class CycleStop(Exception):
    """Ends a cycle early with an outcome (not an error: a denial, a failed A/B, nothing to do...)."""

    def __init__(self, outcome: str, reason: str, *, restore: bool = True, status: str = "finished") -> None:
        super().__init__(reason)
        self.outcome, self.reason, self.restore, self.status = outcome, reason, restore, status


class CycleBusy(AutoOptError):
    """Another cycle holds the lock."""


def plan_for(gate: str | None) -> list[dict[str, Any]]:
    """The supervisor's delegation for a fired gate: which specialist does what, in order."""
    plans: dict[str, list[dict[str, Any]]] = {
        "ndcg_drop": [
            {"agent": "data", "tools": ["build_dataset", "explain_reranker", "augment_dataset"]},
            {"agent": "ml", "tools": ["train_reranker", "register_model", "evaluate_model"]},
            {"agent": "devops", "tools": ["deploy_canary", "start_ab_test", "promote_model", "rollback_deployment"]},
        ],
        "p95_latency": [{"agent": "devops", "tools": ["scale_service", "switch_variant"]}],
        "cost_budget": [{"agent": "devops", "tools": ["switch_variant"]}],
        "retries": [{"agent": "metrics", "tools": ["query_metrics"]},
                    {"agent": "devops", "tools": ["rollback_deployment"]}],
        "deploy_watch": [{"agent": "devops", "tools": ["rollback_deployment"]}],
    }
    return plans.get(gate or "", [])


class CycleRunner:
    """Runs cycles for one AUTOOPT_HOME; shared by the CLI, the scheduler and the API."""

    def __init__(self, settings: Settings | None = None, *, profile: Profile | None = None, release: Any = None,
                 source: SampleSource | None = None, registry: Any = None,
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
    def release(self) -> Any:
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
    def registry(self) -> Any:
        if self._registry is None:
            from autooptimizer.tools import load_all_tools

            self._registry = load_all_tools()
        return self._registry

    def _emit(self, kind: str, **data: Any) -> None:
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
            rec = self._begin(options or CycleOptions())
            return self._execute(rec.id, options or CycleOptions())
        finally:
            self.lock.release()

    def trigger(self, options: CycleOptions | None = None) -> str | None:
        """Start a cycle in a background thread; returns its id, or None when one is already running."""
        if not self.lock.acquire():
            return None
        try:
            self._recover_locked()
            rec = self._begin(options or CycleOptions())
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
        out = []
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
                _write_json(Path(rec.artifacts_dir) / "summary.json", _summary_doc(done))
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
    def _begin(self, opts: CycleOptions) -> CycleRecord:
        rec = self.journal.new_cycle(trigger=opts.trigger, env=self.settings.env, gate=opts.gate)
        _write_json(Path(rec.artifacts_dir or "") / "summary.json", _summary_doc(rec))
        return rec

    def _execute(self, cycle_id: str, opts: CycleOptions) -> CycleRecord:
        from autooptimizer.tools.context import trace_scope

        self.current_cycle = cycle_id
        started = time.time()
        state: dict[str, Any] = {"options": opts.model_dump(), "decisions": []}
        self._emit("cycle_start", cycle_id=cycle_id)
        try:
            with self._trace(cycle_id, opts) as trace:
                trace_id = getattr(trace, "trace_id", None)
                if trace_id:
                    self.journal.update(cycle_id, trace_id=trace_id)
                with trace_scope(trace_id):
                    try:
                        outcome, reason = self._body(cycle_id, opts, state)
                        status = "finished"
                    except CycleStop as stop:
                        outcome, reason, status = stop.outcome, stop.reason, stop.status
                        if stop.restore:
                            state["restore"] = self._restore(cycle_id, reason)
                    except Exception as exc:  # noqa: BLE001 - any failure aborts cleanly
                        outcome, status = "failed", "failed"
                        reason = f"{type(exc).__name__}: {getattr(exc, 'problem', exc)}"
                        state["traceback"] = traceback.format_exc(limit=8)
                        state["restore"] = self._restore(cycle_id, reason)
                    if trace is not None and hasattr(trace, "set_outputs"):
                        trace.set_outputs({"outcome": outcome, "reason": reason})
        finally:
            self.current_cycle = None
        state.update({"outcome": outcome, "reason": reason, "duration_seconds": round(time.time() - started, 3)})
        rec = self.journal.finish(cycle_id, status, outcome, summary=_jsonable(state),
                                  error=reason if status == "failed" else None)
        _write_json(Path(rec.artifacts_dir or "") / "summary.json", _summary_doc(rec))
        self._emit("cycle_end", cycle_id=cycle_id, outcome=outcome, reason=reason)
        return rec

    def _trace(self, cycle_id: str, opts: CycleOptions) -> Any:
        try:
            from autooptimizer.tracing.spans import start_trace
        except ImportError:  # tracing not installed: the journal and audit log still record everything
            return nullcontext(None)
        return start_trace(f"cycle {cycle_id}", {"cycle_id": cycle_id, "env": self.settings.env,
                                                 "trigger": opts.trigger}, inputs=opts.model_dump())

    def _span(self, name: str, inputs: Any = None) -> Any:
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
        self._emit("step_start", cycle_id=cycle_id, step=name)
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
                sp.set_outputs(_jsonable(out))
        self.journal.step_end(cycle_id, seq, "done", _jsonable(out) if isinstance(out, dict) else {"result": out})
        checkpoint(f"step:{name}:end")
        self._emit("step_end", cycle_id=cycle_id, step=name, seconds=round(time.time() - t0, 3))
        return out

    def tool(self, state: dict[str, Any], agent: str, name: str, args: dict[str, Any],
             evidence: dict[str, Any] | None = None, approval_id: str | None = None) -> Any:
        """A gated tool call. Deny -> stop the cycle; needs_approval -> stop awaiting a human; error -> raise."""
        res = self.registry.call(agent, name, args, env=self.settings.env, evidence=evidence,
                                 requested_by=f"loop:{agent}", approval_id=approval_id, cycle_id=self.current_cycle,
                                 sample_source=self.source, release=self.release)
        state["decisions"].append({"agent": agent, "tool": name, "decision": res.decision,
                                   "policies": res.policies, "executed": res.executed,
                                   "approval_id": res.approval_id})
        if res.decision == "deny":
            raise CycleStop("denied", f"{agent}.{name} denied by policy: {res.reason}")
        if res.decision == "needs_approval":
            raise CycleStop("awaiting_approval", f"{agent}.{name} needs approval: request {res.approval_id} "
                            f"(`autoopt approvals approve {res.approval_id}`)")
        if res.error:
            raise StepFailed(f"{agent}.{name} failed: {res.error}")
        return res.result

    # -- paths ----------------------------------------------------------------------------------------------------
    def _body(self, cid: str, opts: CycleOptions, state: dict[str, Any]) -> tuple[str, str]:
        if opts.gate in (None, "ndcg_drop"):
            approved = self._approved_promotions()
            if approved:
                return self._promote_approved(cid, opts, state, approved[0])
        report = self.step(cid, "monitor", lambda: self.tool(state, "metrics", "check_quality_gates",
                                                             {"env": self.settings.env}))
        firing = [g for g in GATE_PRIORITY if g in (report or {}).get("firing", [])
                  and (opts.act_on is None or g in opts.act_on)]
        state["gates"] = {g["name"]: g["status"] for g in (report or {}).get("gates", [])}
        if opts.gate and opts.gate != "deploy_watch" and opts.gate not in firing and not self.profile.loop.mock_signals:
            raise CycleStop("no_action", f"gate {opts.gate} is not firing and this profile ({self.profile.name}) "
                            "does not allow mock signals", restore=False)
        gate = opts.gate or (firing[0] if firing else None)
        self.journal.update(cid, gate=gate)
        state["gate"] = gate
        plan = plan_for(gate)
        self.step(cid, "supervisor", lambda: {"gate": gate, "firing": firing, "delegates": plan})
        if gate is None:
            return "no_action", "no quality gate is firing"
        handler = {"ndcg_drop": self._retrain_path, "p95_latency": self._latency_path, "cost_budget": self._cost_path,
                   "retries": self._errors_path, "deploy_watch": self._watch_path}[gate]
        return handler(cid, opts, state)

    def _approved_promotions(self) -> list[Any]:
        """Promotions a human approved since an earlier cycle stopped for them (staging's autoPromote: false)."""
        from autooptimizer.policies.approvals import ApprovalStore

        return [r for r in ApprovalStore().list(status="approved")
                if r.tool == "promote_model" and r.env == self.settings.env and r.agent == "devops"]

    def _promote_approved(self, cid: str, opts: CycleOptions, state: dict[str, Any], req: Any) -> tuple[str, str]:
        current, _ = self.release.current()
        challenger = req.args["model_version"]
        state.update({"gate": "ndcg_drop", "champion": current.model_version, "challenger": challenger,
                      "approval_id": req.id, "approved_by": req.decided_by, "requested_in": req.cycle_id})
        self.journal.update(cid, gate="ndcg_drop")
        promo = self.step(cid, "promote", lambda: self.tool(state, "devops", "promote_model",
                                                            {"model_version": challenger}, approval_id=req.id),
                          {"approval_id": req.id})
        state["promoted_revision"] = promo["revision"]
        _write_helm_patch(self._artifacts(cid), self.release)
        return self._watch(cid, opts, state, new=challenger, old=current.model_version,
                           bad_revision=promo["revision"], outcome_ok="promoted", revert_cycle=True)

    def _artifacts(self, cid: str) -> Path:
        return self.settings.home / "artifacts" / cid

    def _retrain_path(self, cid: str, opts: CycleOptions, state: dict[str, Any]) -> tuple[str, str]:
        current, _ = self.release.current()
        state["champion"] = current.model_version
        if opts.challenger:
            challenger = opts.challenger
            state["challenger"] = challenger
            self.step(cid, "challenger", lambda: {"model_version": challenger, "source": "given"})
        else:
            from autooptimizer.loop.retrain import run_retrain

            result = run_retrain(self, cid, opts, state, champion=current.model_version,
                                 artifacts=self._artifacts(cid))
            challenger = result["model_version"]
            state["challenger"] = challenger
            ev = result["evaluation"]
            state["offline"] = {side: {k: ev[side][k] for k in ("version", "new_domain_ndcg@10", "original_ndcg@10")}
                                for side in ("champion", "challenger")} | {"promotable": result["promotable"]}
            if not result.get("promotable", False):
                raise CycleStop("rejected_offline", f"challenger {challenger} failed the offline promotion rule: "
                                f"{result.get('reason', 'see evaluation')}")
        return self._release_path(cid, opts, state, champion=current.model_version, challenger=challenger)

    def _release_path(self, cid: str, opts: CycleOptions, state: dict[str, Any], *, champion: str,
                      challenger: str) -> tuple[str, str]:
        ab = self.profile.ab_test
        if ab.enabled:
            self.step(cid, "canary", lambda: self.tool(state, "devops", "deploy_canary",
                                                       {"model_version": challenger, "weight": ab.canary_weight}))
            args: dict[str, Any] = {"model_version": challenger, "control_version": champion}
            if opts.ab_min_samples:
                args["min_samples"] = opts.ab_min_samples
            if opts.ab_max_duration_seconds:
                args["max_duration_seconds"] = opts.ab_max_duration_seconds
            state["ab_started_ts"] = time.time()
            result = self.step(cid, "ab_test", lambda: self.tool(state, "devops", "start_ab_test", args))
            state["ab_verdict"] = result["verdict"]
            if result["verdict"] != "pass":
                raise CycleStop(f"ab_{'failed' if result['verdict'] == 'fail' else 'inconclusive'}",
                                f"A/B verdict {result['verdict']}: {'; '.join(result.get('reasons', []))}")
        if not self.profile.loop.auto_promote:
            state["promotion"] = "waiting for a human (autoPromote: false)"
        promo = self.step(cid, "promote", lambda: self.tool(state, "devops", "promote_model",
                                                            {"model_version": challenger},
                                                            evidence={"ab_test": state.get("ab_verdict"),
                                                                      "cycle_id": cid}))
        state["promoted_revision"] = promo["revision"]
        _write_helm_patch(self._artifacts(cid), self.release)
        return self._watch(cid, opts, state, new=challenger, old=champion, bad_revision=promo["revision"],
                           outcome_ok="promoted", revert_cycle=True, baseline_since=state.get("ab_started_ts"))

    def _watch(self, cid: str, opts: CycleOptions, state: dict[str, Any], *, new: str, old: str,
               bad_revision: str, outcome_ok: str, baseline_until: float | None = None,
               revert_cycle: bool = False, baseline_since: float | None = None) -> tuple[str, str]:
        """Watch `new` against `old`'s samples from `baseline_since` (the A/B test's control arm when there was one,
        else the gate's baseline window before the deploy: the traffic mix the new version now serves)."""
        from autooptimizer.loop.watch import watch_deployment

        seconds = opts.watch_seconds or self.profile.loop.watch_window_seconds
        deployed = baseline_until or time.time()
        if baseline_since is None:
            baseline_since = deployed - self.profile.gates.baseline_window_seconds
        cfg = ABConfig.from_profile(self.profile, **({"min_samples": opts.ab_min_samples} if opts.ab_min_samples
                                                     else {}))
        def progress(n: int, elapsed: float) -> None:
            self._emit("watch", cycle_id=cid, samples=n, elapsed=elapsed)

        verdict = self.step(cid, "watch", lambda: watch_deployment(
            self.source, new=new, old=old, seconds=seconds, config=cfg, since=time.time(),
            baseline_until=baseline_until, baseline_since=baseline_since, on_progress=progress))
        state["watch"] = verdict
        if not verdict["degraded"]:
            self.journal.mark_clean(cid)
            if outcome_ok == "promoted":
                self._move_champion(cid, state, new)
            return outcome_ok, f"{new} serves; the {seconds:.0f} s watch saw no degradation"
        if not self.profile.loop.rollback_on_degrade:
            raise_alert(self.settings, "AutoOptDegradedNoRollback", f"{new} degraded; rollbackOnDegrade is off",
                        labels={"cycle_id": cid})
            self.journal.mark_clean(cid)
            return "degraded", f"{new} degraded ({'; '.join(verdict['reasons'])}); rollback disabled by profile"
        t0 = time.time()
        target = {"cycle_id": cid} if revert_cycle else {"revision": bad_revision}
        rb = self.step(cid, "rollback", lambda: self.tool(
            state, "devops", "rollback_deployment",
            {"reason": f"{new} degraded: {'; '.join(verdict['reasons'])}"[:500], **target}))
        state["rollback"] = {**rb, "seconds": round(time.time() - t0, 3),
                             "detect_to_restored_seconds": round(time.time() - verdict["detected_at"], 3)}
        self.journal.mark_clean(cid)
        _write_helm_patch(self._artifacts(cid), self.release)
        raise_alert(self.settings, "AutoOptRolledBack", f"{new} rolled back to {rb['stable']}: "
                    f"{'; '.join(verdict['reasons'])}", severity="critical",
                    labels={"cycle_id": cid, "model_version": new}, details=state["rollback"])
        return "rolled_back", f"{new} degraded and was rolled back to {rb['stable']}"

    def _move_champion(self, cid: str, state: dict[str, Any], version: str) -> None:
        """After a promotion survived its watch, the registry's `champion` alias follows what serves (ml agent,
        gated). The deployment is already final: a refusal here is recorded and alerted, never rolled back."""
        try:
            res = self.step(cid, "champion_alias", lambda: self.tool(
                state, "ml", "set_model_alias", {"alias": "champion", "version": version}, evidence={"cycle_id": cid}))
            state["champion_alias"] = {"version": version, "mlflow_version": res.get("mlflow_version")}
        except (CycleStop, AutoOptError) as exc:
            state["champion_alias"] = {"version": version, "error": str(exc)}
            raise_alert(self.settings, "AutoOptAliasNotMoved", f"{version} serves but `champion` was not moved: {exc}",
                        labels={"cycle_id": cid, "model_version": version})

    def _watch_path(self, cid: str, opts: CycleOptions, state: dict[str, Any]) -> tuple[str, str]:
        """Watch the latest deployment commit against the one before it (e.g. after a manual deploy)."""
        git = self.release.git
        head = git.head()
        new_patch = git.read_patch(head)
        before = git.parent(head)
        prev_patch = git.read_patch(before) if before else None
        if new_patch is None or prev_patch is None or new_patch.model_version == prev_patch.model_version:
            raise CycleStop("no_action", "the latest deployment commit did not change the stable model",
                            restore=False)
        deployed_at = git.commit_time(head)
        state.update({"watched_revision": head, "new": new_patch.model_version, "old": prev_patch.model_version})
        return self._watch(cid, opts, state, new=new_patch.model_version, old=prev_patch.model_version,
                           bad_revision=head, outcome_ok="kept", baseline_until=deployed_at)

    def _latency_path(self, cid: str, opts: CycleOptions, state: dict[str, Any]) -> tuple[str, str]:
        current, _ = self.release.current()
        if current.replicas < MAX_REPLICAS:
            n = min(MAX_REPLICAS, current.replicas * 2)
            res = self.step(cid, "scale", lambda: self.tool(state, "devops", "scale_service", {"replicas": n}))
            outcome, reason = "scaled", f"replicas {current.replicas} -> {n}"
        else:
            depth = _smaller_depth(current.rerank_depth)
            res = self.step(cid, "switch_variant", lambda: self.tool(state, "devops", "switch_variant",
                                                                     {"rerank_depth": depth}))
            outcome, reason = "variant_switched", f"at {MAX_REPLICAS} replicas; rerank depth -> {depth}"
        self.journal.mark_clean(cid)
        _write_helm_patch(self._artifacts(cid), self.release)
        state["action"] = res
        return outcome, reason

    def _cost_path(self, cid: str, opts: CycleOptions, state: dict[str, Any]) -> tuple[str, str]:
        current, _ = self.release.current()
        depth = _smaller_depth(current.rerank_depth)
        res = self.step(cid, "switch_variant", lambda: self.tool(state, "devops", "switch_variant",
                                                                 {"rerank_depth": depth}))
        self.journal.mark_clean(cid)
        _write_helm_patch(self._artifacts(cid), self.release)
        state["action"] = res
        return "variant_switched", f"cheaper variant: rerank depth {current.rerank_depth or 'default'} -> {depth}"

    def _errors_path(self, cid: str, opts: CycleOptions, state: dict[str, Any]) -> tuple[str, str]:
        from autooptimizer.search import metric_names as m

        evidence = self.step(cid, "diagnose_errors", lambda: self.tool(
            state, "metrics", "query_metrics",
            {"promql": f"sort_desc(increase({m.RETRIES_TOTAL}[{self.profile.gates.window_seconds}s]))"}))
        current, head = self.release.current()
        last = self.release.git.log(limit=1)
        recent = bool(last) and last[0].sha == head and not last[0].reverted and last[0].cycle_id is not None
        report = {"gate": "retries", "evidence": evidence, "serving": current.model_dump(), "revision": head,
                  "recent_deploy_suspect": recent,
                  "action": "rollback_deployment" if recent else "restart"}
        _write_json(self._artifacts(cid) / "diagnostic_report.json", report)
        if recent:
            rb = self.step(cid, "rollback", lambda: self.tool(state, "devops", "rollback_deployment",
                                                              {"reason": "repeated errors after deploy",
                                                               "revision": head}))
            self.journal.mark_clean(cid)
            raise_alert(self.settings, "AutoOptRolledBack", f"repeated errors: rolled back {head[:12]}",
                        labels={"cycle_id": cid})
            return "rolled_back", f"repeated errors after deploy {head[:12]}: rolled back to {rb['stable']}"
        deployer = self.release.deployer
        if hasattr(deployer, "restart"):
            self.step(cid, "restart", lambda: deployer.restart().model_dump())
            return "restarted", "repeated errors with no suspect deploy: the serving pipelines were rebuilt"
        return "diagnosed", "repeated errors: diagnostic report written; no restart available on this deployer"


class StepFailed(AutoOptError):
    """A tool ran and reported an error."""


def _smaller_depth(depth: int | None) -> int:
    base = depth or 50
    return max(MIN_RERANK_DEPTH, base // 2)


def _write_helm_patch(art: Path, release: Any) -> None:
    patch = release.git.read_patch()
    if patch is not None:
        art.mkdir(parents=True, exist_ok=True)
        (art / "helm_patch.yaml").write_text(patch.to_yaml(header=f"GitOps revision {release.git.head()}"))


def _write_json(path: Path, data: Any) -> None:
    """Write an artifact. The journal is the record of truth: a full or broken artifacts disk is logged, and never
    turns a finished cycle into an exception out of `run()`."""
    if not str(path.parent) or str(path.parent) == ".":
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(_jsonable(data), indent=2))
    except OSError as exc:
        log.error("could not write the artifact %s: %s", path, exc)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _summary_doc(rec: CycleRecord) -> dict[str, Any]:
    art = Path(rec.artifacts_dir or ".")
    files = sorted(p.name for p in art.iterdir()) if art.is_dir() else []
    return {"id": rec.id, "status": rec.status, "outcome": rec.outcome, "trigger": rec.trigger, "gate": rec.gate,
            "env": rec.env, "started_at": rec.started_at, "finished_at": rec.finished_at,
            "duration_seconds": rec.duration_seconds, "trace_id": rec.trace_id, "artifacts_dir": rec.artifacts_dir,
            "artifacts": files, "steps": [s.model_dump() for s in rec.steps], **{"details": rec.summary}}


def validate_gate(name: str | None) -> Gate | None:
    if name in (None, ""):
        return None
    allowed = ("ndcg_drop", "p95_latency", "cost_budget", "retries", "deploy_watch")
    if name not in allowed:
        raise InputError(f"Unknown gate {name!r}.", f"Use one of {', '.join(allowed)}.")
    return name  # type: ignore[return-value]


__all__ = ["CycleBusy", "CycleOptions", "CycleRunner", "CycleStop", "plan_for", "validate_gate"]
