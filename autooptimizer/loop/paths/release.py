"""ndcg_drop: a challenger (retrained by the pipeline, or given) -> canary -> A/B -> promotion -> watch; and the
promotion a human approved after an earlier cycle stopped for it."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, cast

from autooptimizer.loop.artifacts import write_helm_patch
from autooptimizer.loop.cycle_types import CycleOptions, CycleState, CycleStop
from autooptimizer.loop.paths.watch import watch

if TYPE_CHECKING:
    from autooptimizer.loop.cycle import CycleRunner
    from autooptimizer.policies.approvals import ApprovalRequest


def retrain_path(runner: CycleRunner, cid: str, opts: CycleOptions, state: CycleState) -> tuple[str, str]:
    """Give back a rerank depth a cost/latency remedy took when those gates allow (loop/paths/scaling.py); else train
    a challenger with the retrain pipeline (or take `opts.challenger`) and release it if the offline promotion rule
    allows."""
    current, _ = runner.release.current()
    state.champion = current.model_version
    if not opts.challenger:
        from autooptimizer.loop.paths.scaling import restore_variant

        restored = restore_variant(runner, cid, state)
        if restored is not None:  # the shortfall may be the depth a cost/latency remedy took: give it back first
            return restored
    if opts.challenger:
        challenger = opts.challenger
        state.challenger = challenger
        runner.step(cid, "challenger", lambda: {"model_version": challenger, "source": "given"})
    else:
        from autooptimizer.loop.retrain import run_retrain

        result = run_retrain(runner, cid, opts, state, champion=current.model_version,
                             artifacts=runner.artifacts_dir(cid))
        challenger = result["model_version"]
        state.challenger = challenger
        ev = result["evaluation"]
        state.offline = {side: {k: ev[side][k] for k in ("version", "new_domain_ndcg@10", "original_ndcg@10")}
                         for side in ("champion", "challenger")} | {"promotable": result["promotable"]}
        if not result.get("promotable", False):
            raise CycleStop("rejected_offline", f"challenger {challenger} failed the offline promotion rule: "
                            f"{result.get('reason', 'see evaluation')}")
    outcome, reason = release_path(runner, cid, opts, state, champion=current.model_version, challenger=challenger)
    if outcome == "promoted" and state.forgetting:
        _raise_best(state, state.forgetting, challenger, cid)
    return outcome, reason


def _raise_best(state: CycleState, table: dict[str, Any], version: str, cid: str) -> None:
    """A watched promotion raises each evaluation set's best promoted NDCG@10 (the forgetting guard's reference)."""
    from autooptimizer.ml.forgetting import record_promotion

    state.best_raised = record_promotion(table, version, cid)


def release_path(runner: CycleRunner, cid: str, opts: CycleOptions, state: CycleState, *, champion: str,
                 challenger: str) -> tuple[str, str]:
    """Canary at the profile's weight and the A/B test (when enabled), then the promotion and its watch."""
    ab = runner.profile.ab_test
    if ab.enabled:
        runner.step(cid, "canary", lambda: runner.tool(state, "devops", "deploy_canary",
                                                       {"model_version": challenger, "weight": ab.canary_weight}))
        args: dict[str, Any] = {"model_version": challenger, "control_version": champion}
        if opts.ab_min_samples:
            args["min_samples"] = opts.ab_min_samples
        if opts.ab_max_duration_seconds:
            args["max_duration_seconds"] = opts.ab_max_duration_seconds
        state.ab_started_ts = time.time()
        result = runner.step(cid, "ab_test", lambda: runner.tool(state, "devops", "start_ab_test", args))
        state.ab_verdict = result["verdict"]
        if result["verdict"] != "pass":
            raise CycleStop(f"ab_{'failed' if result['verdict'] == 'fail' else 'inconclusive'}",
                            f"A/B verdict {result['verdict']}: {'; '.join(result.get('reasons', []))}")
    if not runner.profile.loop.auto_promote:
        state.promotion = "waiting for a human (autoPromote: false)"
    promo = runner.step(cid, "promote", lambda: runner.tool(state, "devops", "promote_model",
                                                            {"model_version": challenger},
                                                            evidence={"ab_test": state.ab_verdict, "cycle_id": cid}))
    state.promoted_revision = promo["revision"]
    write_helm_patch(runner.artifacts_dir(cid), runner.release)
    return watch(runner, cid, opts, state, new=challenger, old=champion, bad_revision=promo["revision"],
                 outcome_ok="promoted", revert_cycle=True, baseline_since=state.ab_started_ts)


def approved_promotions(env: str) -> list[ApprovalRequest]:
    """Promotions a human approved since an earlier cycle stopped for them (staging's autoPromote: false)."""
    from autooptimizer.policies.approvals import ApprovalStore

    return [r for r in ApprovalStore().list(status="approved")
            if r.tool == "promote_model" and r.env == env and r.agent == "devops"]


def promote_approved(runner: CycleRunner, cid: str, opts: CycleOptions, state: CycleState,
                     req: ApprovalRequest) -> tuple[str, str]:
    """Make exactly the approved promotion, once, and watch it."""
    current, _ = runner.release.current()
    challenger = str(req.args["model_version"])
    state.gate, state.champion, state.challenger = "ndcg_drop", current.model_version, challenger
    state.approval_id, state.approved_by, state.requested_in = req.id, req.decided_by, req.cycle_id
    runner.journal.update(cid, gate="ndcg_drop")
    promo = runner.step(cid, "promote", lambda: runner.tool(state, "devops", "promote_model",
                                                            {"model_version": challenger}, approval_id=req.id),
                        {"approval_id": req.id})
    state.promoted_revision = promo["revision"]
    write_helm_patch(runner.artifacts_dir(cid), runner.release)
    outcome, reason = watch(runner, cid, opts, state, new=challenger, old=current.model_version,
                            bad_revision=promo["revision"], outcome_ok="promoted", revert_cycle=True)
    table = _requested_guard(runner, req.cycle_id)
    if outcome == "promoted" and table:
        _raise_best(state, table, challenger, cid)
    return outcome, reason


def _requested_guard(runner: CycleRunner, cycle_id: str | None) -> dict[str, Any] | None:
    """The forgetting guard's table of the cycle that asked for this approval (its evaluation.json), if any."""
    import json

    path = runner.artifacts_dir(cycle_id) / "evaluation.json" if cycle_id else None
    try:
        doc: object = json.loads(path.read_text()) if path is not None and path.is_file() else {}
    except (OSError, ValueError):
        return None
    table: object = cast("dict[str, Any]", doc).get("forgetting") if isinstance(doc, dict) else None
    return cast("dict[str, Any]", table) if isinstance(table, dict) else None
