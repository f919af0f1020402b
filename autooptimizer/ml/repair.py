"""`autoopt repair`: a whole corpus-shift repair against the current champion, the retrain pipeline (ml/pipeline.py)
run offline by an operator.

The steps are the loop's (split, feedback, dataset, diagnose, augment, dataset_final, train, register, evaluate),
with each tool's function called directly with its args model and a ToolContext: no PDP, as an operator's own
command. The new domain's judged queries are split by the seed: half become simulated feedback (served by the
champion, judged from qrels, in the service's feedback-log format), half are held out; with `holdout_qids`, exactly
those are held out. Held-out queries are read by nothing but the final evaluation; the original domain's `test`
split is only evaluated, never trained or tuned on.

Each step writes its artifact into `artifacts_dir` (split.json, feedback.jsonl, base.dataset_manifest.yaml,
dataset_manifest.yaml, diagnostic_report.json, augmented_dataset.csv, train_result.json, mlflow_run_id.txt,
evaluation.json, repair_result.json) and records the pipeline's state in repair_state.json, so
`Repair(artifacts_dir, ...)` resumes: a recorded step is not rerun (the evaluation always is).
"""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from autooptimizer.errors import InputError
from autooptimizer.ml import pipeline
from autooptimizer.ml.pipeline import Call, PipelineState, Step

STEPS = pipeline.STEP_NAMES
OnStep = Callable[[str, str, dict[str, Any]], None]  # (step, "start" | "done", info)


class StepRecord(BaseModel):
    step: str
    seconds: float
    artifact: str | None = None
    info: dict[str, Any] = Field(default_factory=dict)


class RepairState(BaseModel):
    """repair_state.json: the pipeline's state and the steps recorded so far."""

    trainer: str
    pipeline: PipelineState
    steps: dict[str, StepRecord] = Field(default_factory=dict)


class RepairResult(BaseModel):
    champion: dict[str, Any]
    challenger: dict[str, Any]
    gold: dict[str, Any] | None
    promotable: bool
    reasons: list[str]
    artifacts_dir: str
    dataset: str
    run_id: str | None
    verdict: str | None
    holdout_queries: int
    feedback_queries: int
    step_seconds: dict[str, float]

    def public(self) -> dict[str, Any]:
        return self.model_dump()


def _ts() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S")


def call_tool_directly(step: Step, call: Call, args: dict[str, Any], env: str | None = None) -> dict[str, Any]:
    """Run `step`'s tool function with its args model and a fresh ToolContext, outside the registry's gate."""
    import importlib

    from autooptimizer.settings import get_settings
    from autooptimizer.tools.context import ToolContext
    from autooptimizer.tools.registry import REGISTRY, TOOL_MODULES

    for mod in TOOL_MODULES:  # each module registers its tools once
        importlib.import_module(f"autooptimizer.tools.{mod}")
    spec = REGISTRY.get(call.tool or step.tool or call.name)
    settings = get_settings()
    ctx = ToolContext(env=env or settings.env, settings=settings, trace_id=uuid.uuid4().hex)
    result = spec.func(spec.args_model.model_validate(args), ctx)
    return result.model_dump(mode="json") if isinstance(result, BaseModel) else result


def check_method(trainer: str, adaptation: str | None, max_steps: int | None = None) -> None:
    """Raise InputError when the train step would refuse the method: an unknown trainer, an unnamed adaptation, a
    pair one training refuses, or a step limit outside the train tool's or given to ltr, which ignores it (checked
    now, not after the diagnosis)."""
    from pydantic import ValidationError

    from autooptimizer.tools.ml import TrainRerankerArgs

    if trainer == "ltr" and max_steps is not None:  # recorded with every row, yet the ltr fit has no steps to limit
        raise InputError(f"max_steps {max_steps} limits a neural trainer's steps; the ltr trainer has none.",
                         "Leave the step limit out for ltr, or train bi_encoder or cross_encoder.")
    args = {"dataset": "-", "trainer": trainer, "adaptation": adaptation}
    try:
        TrainRerankerArgs.model_validate(args | ({} if max_steps is None else {"max_steps": max_steps}))
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "method"
        raise InputError(f"Cannot train {trainer} with adaptation {adaptation} and max_steps {max_steps}: {where}: "
                         f"{err['msg']}.", "Use trainer ltr, bi_encoder or cross_encoder, an adaptation that trainer "
                         "takes, and max_steps from 1 to 100000.") from exc


class Repair:
    """One repair's state in `artifacts_dir`."""

    def __init__(self, domain_data: str | Path, artifacts_dir: str | Path | None = None, seed: int = 0,
                 holdout_qids: str | Path | None = None, trainer: str = "ltr", original: str = "scifact",
                 on_step: OnStep | None = None, env: str | None = None, adaptation: str | None = None,
                 max_steps: int | None = None) -> None:
        from autooptimizer.search import aliases
        from autooptimizer.settings import get_settings

        settings = get_settings()
        check_method(trainer, adaptation, max_steps)  # a bad name fails now, not after the diagnosis
        domain_dir = settings.dataset(str(domain_data))
        original_dir = settings.dataset(original)
        if artifacts_dir:
            self.dir = Path(artifacts_dir)
            self.dir.mkdir(parents=True, exist_ok=True)
        else:  # a fresh folder each time: two repairs started in the same second must not share (and resume) one
            root = settings.path("repairs", "x").parent
            self.dir = Path(tempfile.mkdtemp(prefix=f"{domain_dir.name}-s{seed}-{_ts()}-", dir=root))
        self.on_step: OnStep = on_step or (lambda _s, _p, _i: None)
        self.env = env
        path = self.dir / "repair_state.json"
        if path.is_file():
            self.state = RepairState.model_validate_json(path.read_text())
            ps = self.state.pipeline
            if ps.domain_data != str(domain_dir) or ps.seed != seed:
                raise InputError(f"{self.dir} holds a repair of {ps.domain_data} seed {ps.seed}.",
                                 "Use a new --artifacts-dir for a different domain or seed.")
            stored = (self.state.trainer, ps.adaptation, ps.max_steps)
            if stored != (trainer, adaptation, max_steps):  # resuming would train (or report) the stored method
                raise InputError(f"{self.dir} holds a repair with trainer {stored[0]}, adaptation {stored[1]}, "
                                 f"max_steps {stored[2]}; this one asks for trainer {trainer}, adaptation "
                                 f"{adaptation}, max_steps {max_steps}.",
                                 "Resume with the stored method, or use a new --artifacts-dir for another.")
        else:
            ps = PipelineState(env=env, domain_data=str(domain_dir), domain=domain_dir.name,
                               original=str(original_dir), seed=seed, champion=aliases.require_alias(aliases.CHAMPION),
                               artifacts=self.dir, holdout_file=str(holdout_qids) if holdout_qids else None,
                               trainer=trainer, adaptation=adaptation, max_steps=max_steps)
            self.state = RepairState(trainer=trainer, pipeline=ps)
            self._save()

    def _save(self) -> None:
        (self.dir / "repair_state.json").write_text(self.state.model_dump_json(indent=2))

    def _call(self, step: Step, call: Call, args: dict[str, Any]) -> dict[str, Any]:
        return call_tool_directly(step, call, args, self.env)

    def _run_step(self, step: Step, work: Callable[[], dict[str, Any]], inputs: dict[str, Any] | None
                  ) -> dict[str, Any]:
        """Record one step (skip it when already recorded; the evaluation, the report, always runs)."""
        done = self.state.steps.get(step.name)
        if done is not None and step.name != "evaluate":
            return done.info
        t0 = time.perf_counter()
        self.on_step(step.name, "start", {})
        out = work()
        info = out if step.tool is None else (
            {"promotable": out.get("promotable")} if step.run is not None else step.calls[0].read(out))
        rec = StepRecord(step=step.name, seconds=round(time.perf_counter() - t0, 1),
                         artifact=str(self.dir / step.artifact) if step.artifact else None,
                         info={k: v for k, v in info.items() if v is not None})
        self.state.steps[step.name] = rec
        self._save()
        self.on_step(step.name, "done", {"seconds": rec.seconds, **rec.info})
        return out

    def run(self, skip: tuple[str, ...] = ()) -> RepairResult:
        """Every step in order (a step already recorded in the state is not rerun)."""
        ps = self.state.pipeline
        pipeline.run(ps, call_tool=self._call, run_step=self._run_step, skip=skip)
        ev = ps.evaluation or {}
        gold = ev.get("gold") or {}
        result = RepairResult(
            champion=ev["champion"], challenger=ev["challenger"], gold=None if "same_as" in gold else gold,
            promotable=ev["promotable"], reasons=ev["reasons"], artifacts_dir=str(self.dir),
            dataset=ps.dataset or "", run_id=ps.mlflow_run_id, verdict=ps.verdict,
            holdout_queries=len(ps.holdout), feedback_queries=len(ps.feedback_qids),
            step_seconds={k: v.seconds for k, v in self.state.steps.items()})
        (self.dir / "repair_result.json").write_text(result.model_dump_json(indent=2))
        return result


def repair(domain_data: str | Path, seed: int = 0, holdout_qids: str | Path | None = None,
           artifacts_dir: str | Path | None = None, on_step: OnStep | None = None, trainer: str = "ltr",
           skip: tuple[str, ...] = (), **kwargs: Any) -> RepairResult:
    """Run a whole repair; see `Repair` for the steps and their artifacts."""
    return Repair(domain_data, artifacts_dir, seed, holdout_qids, trainer, on_step=on_step, **kwargs).run(skip)
