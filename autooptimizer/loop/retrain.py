"""The retrain half of an NDCG cycle: the retrain pipeline (ml/pipeline.py) run by the loop.

A retrain started by a gate or the schedule needs data the last one did not have: when the last cycle that trained a
challenger for the same domain from the same champion already saw every judged query the log now holds (fewer than
`retrain.minNewFeedback` new ones, held-out queries not counted), the cycle ends `no_remedy` at its `new_feedback`
step without training (`stale_retrain`). So a gate that keeps firing on a shortfall nothing could repair (the NDCG
anchor, gates.py) costs one short cycle per confirmation, not a retrain. An operator's cycle always retrains.

Every step is one journaled cycle step (`CycleRunner.step`) under the pipeline's step name; every tool call is a
gated registry call (`CycleRunner.tool`: PDP + audit, with the cycle id as evidence). The feedback is the live
feedback log's: the records of the shifted domain served by the champion, held-out queries dropped. The domain is
`--domain-data`, or else the one that explains the NDCG gate's drop in the gate's own windows (the current window
vs the baseline before it, or vs the gate's anchor when that is higher: `shifted_domain`), not the majority of older
traffic.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autooptimizer.errors import AutoOptError
from autooptimizer.loop.anchor import AnchorStore
from autooptimizer.loop.cycle_types import CycleOptions, CycleState, CycleStop
from autooptimizer.loop.journal import CycleRecord
from autooptimizer.ml import pipeline
from autooptimizer.ml.pipeline import Call, PipelineState, Step
from autooptimizer.ml.pipeline_data import shifted_domain

if TYPE_CHECKING:
    from autooptimizer.loop.cycle import CycleRunner

TRAINER = "ltr"  # the ML path's measured repair (ml/repair.py, docs/benchmarks.md): a gated ltr_fusion expert
TRAIN_TIME_BUDGET_S = 600.0


def retrain_state(runner: CycleRunner, opts: CycleOptions, *, champion: str, artifacts: Path,
                  cycle_id: str | None = None) -> PipelineState:
    """The pipeline's starting state for this cycle (the domain named, or read from the recent feedback). Repairs
    chain: the parent is `champion` (what serves now, so earlier repairs are kept), each domain's held-out queries
    are its fixed evaluation set, and the forgetting guard joins the promotion rule (ml/forgetting.py)."""
    log = runner.settings.feedback_log
    gates = runner.profile.gates
    domain = opts.domain_data or shifted_domain(log, window_s=gates.window_seconds,
                                                baseline_window_s=gates.baseline_window_seconds,
                                                reference=AnchorStore.for_settings(runner.settings).read().level)
    if not domain:
        raise AutoOptError("No shifted domain: the feedback log names no dataset.",
                           "Pass --domain-data (the new domain's BEIR folder or name).")
    return PipelineState(env=runner.settings.env, domain_data=str(domain), domain=Path(str(domain)).name,
                         original=opts.original, seed=opts.seed, champion=champion, artifacts=artifacts,
                         feedback_log=log, trainer=TRAINER, time_budget_s=TRAIN_TIME_BUDGET_S,
                         fixed_eval_sets=True, cycle_id=cycle_id,
                         min_feedback=runner.profile.retrain.min_new_feedback)


def run_retrain(runner: CycleRunner, cid: str, opts: CycleOptions, state: CycleState, *, champion: str,
                artifacts: Path) -> dict[str, Any]:
    """Run the pipeline; returns {model_version, promotable, reason, mlflow_run_id, evaluation} (evaluation's
    `forgetting` is the guard's per-set table, also the cycle summary's `forgetting`)."""
    artifacts.mkdir(parents=True, exist_ok=True)
    ps = retrain_state(runner, opts, champion=champion, artifacts=artifacts, cycle_id=cid)
    state.domain = ps.domain
    if opts.trigger in ("gate", "schedule"):
        runner.step(cid, "new_feedback", lambda: _require_new_feedback(runner, cid, ps))
    evidence = {"cycle_id": cid}

    def call_tool(step: Step, call: Call, args: dict[str, Any]) -> dict[str, Any]:
        return runner.tool(state, step.agent, call.tool or step.tool or call.name, args, evidence=evidence)

    def run_step(step: Step, work: Callable[[], dict[str, Any]], inputs: dict[str, Any] | None) -> dict[str, Any]:
        out = runner.step(cid, step.name, work, inputs)
        _reflect(ps, state, step.name)
        return out

    pipeline.run(ps, call_tool=call_tool, run_step=run_step)
    evaluation = ps.evaluation or {}
    state.forgetting = ps.forgetting
    return {"model_version": ps.challenger, "promotable": evaluation.get("promotable", False),
            "mlflow_run_id": ps.mlflow_run_id, "reason": "; ".join(evaluation.get("reasons", [])),
            "evaluation": evaluation}


def last_retrain(runner: CycleRunner, domain: str, champion: str, *, before: str | None = None,
                 depth: int = 500) -> CycleRecord | None:
    """The newest journaled cycle (other than `before`) that trained a challenger for `domain` from `champion`."""
    for rec in runner.journal.list(depth):
        s = rec.summary
        if rec.id != before and s.get("domain") == domain and s.get("champion") == champion and s.get("challenger"):
            return rec
    return None


def stale_retrain(runner: CycleRunner, ps: PipelineState, cid: str | None = None) -> tuple[str | None, dict[str, Any]]:
    """(why a retrain now would see no new data, or None; the counts). New = judged queries of the domain served by
    the champion in the log that the last such retrain neither trained on nor held out (its artifacts' feedback.jsonl
    and split.json); when those artifacts were pruned, judged queries logged after it started."""
    from autooptimizer.ml.pipeline_data import judged_queries_in_log

    domain, champion = ps.domain or "", ps.champion or ""
    last = last_retrain(runner, domain, champion, before=cid)
    if last is None:
        return None, {"last_retrain": None}
    seen = _seen_queries(Path(last.artifacts_dir) if last.artifacts_dir else None)
    since = None if seen is not None else last.started_at
    new = judged_queries_in_log(runner.settings.feedback_log, domain, champion, exclude=seen, since=since)
    needed = runner.profile.retrain.min_new_feedback
    info: dict[str, Any] = {"last_retrain": last.id, "new_judged_queries": len(new), "needed": needed,
                            "counted": "since it started" if since is not None else "not in its feedback or holdout"}
    if len(new) >= needed:
        return None, info
    return (f"no new feedback: cycle {last.id} already retrained {domain} from {champion} ({last.outcome}); "
            f"{len(new)} judged {domain} queries are new since, retrain.minNewFeedback asks for {needed}"), info


def _seen_queries(artifacts: Path | None) -> set[str] | None:
    """Query ids a retrain trained on or held out (its feedback.jsonl and split.json); None when either is gone."""
    if artifacts is None or not (artifacts / "feedback.jsonl").is_file() or not (artifacts / "split.json").is_file():
        return None
    try:
        seen = {str(json.loads(line).get("query_id")) for line in
                (artifacts / "feedback.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()}
        split: Any = json.loads((artifacts / "split.json").read_text(encoding="utf-8"))
        held: list[Any] = list(split["holdout"])
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return None
    return seen | {str(q) for q in held}


def _require_new_feedback(runner: CycleRunner, cid: str, ps: PipelineState) -> dict[str, Any]:
    why, info = stale_retrain(runner, ps, cid)
    if why is not None:
        raise CycleStop("no_remedy", why, restore=False)
    return info


def _reflect(ps: PipelineState, state: CycleState, step: str) -> None:
    """What the cycle's summary shows of the pipeline, as each step ends."""
    if step == "diagnose" and ps.diagnosis is not None:
        state.diagnosis = ps.diagnosis
    elif step == "register":
        state.mlflow = {"run_id": ps.mlflow_run_id, "registered_model": ps.registered_model,
                        "mlflow_version": ps.registered_version}
