"""The retrain half of an NDCG cycle: the retrain pipeline (ml/pipeline.py) run by the loop.

Every step is one journaled cycle step (`CycleRunner.step`) under the pipeline's step name; every tool call is a
gated registry call (`CycleRunner.tool`: PDP + audit, with the cycle id as evidence). The feedback is the live
feedback log's: the records of the shifted domain served by the champion, held-out queries dropped. The domain is
`--domain-data`, or else the one that explains the NDCG gate's drop in the gate's own windows (the current window
vs the baseline before it: `shifted_domain`), not the majority of older traffic.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autooptimizer.errors import AutoOptError
from autooptimizer.loop.cycle_types import CycleOptions, CycleState
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
                                                baseline_window_s=gates.baseline_window_seconds)
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


def _reflect(ps: PipelineState, state: CycleState, step: str) -> None:
    """What the cycle's summary shows of the pipeline, as each step ends."""
    if step == "diagnose" and ps.diagnosis is not None:
        state.diagnosis = ps.diagnosis
    elif step == "register":
        state.mlflow = {"run_id": ps.mlflow_run_id, "registered_model": ps.registered_model,
                        "mlflow_version": ps.registered_version}
