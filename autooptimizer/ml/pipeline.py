"""The retrain pipeline: ONE typed list of steps, run by `autoopt repair`, by the loop's retrain and by the agents'
data and ML jobs. Changing the recipe (adding a step, an argument, a result key) is one edit to `PIPELINE`.

    step           agent  tool               artifact (loop and repair)
    split          data   -                  split.json: the domain's judged queries halved by the seed (or the
                                             ids of a held-out file): feedback half / held-out half
    feedback       data   -                  feedback.jsonl: the domain's feedback served by the champion, held-out
                                             queries dropped (the live log; offline, served by the champion)
    dataset        data   build_dataset      base.dataset_manifest.yaml
    diagnose       data   explain_reranker   diagnostic_report.json (SHAP on the champion)
    augment        data   augment_dataset    augmented_dataset.csv (loop/remedies.augment_size rows)
    dataset_final  data   build_dataset      dataset_manifest.yaml: feedback + augmented CSV (what training used)
    train          ml     train_reranker     mlflow_run_id.txt, train_result.json
    register       ml     register_model
    evaluate       ml     evaluate_model xN  evaluation.json: challenger, champion (and gold when it differs) on the
                          measure_serving_   held-out half and on the original domain's test split, both versions'
                          cost               CPU per query side by side -> the profile's promotion rule

A tool step's `Call` builds the tool's arguments from the typed `PipelineState` (a None value is left out, so the
tool's default applies; a value the call cannot do without raises `MissingInput`) and `reads` named keys of the
tool's result back into the state. Runners:
- loop/retrain.py: every call gated (registry -> Cedar PDP -> audit), every step journaled;
- ml/repair.py: each tool's function called directly with its args model and a ToolContext (an operator's offline
  command: no PDP), each step recorded so a repair resumes;
- agents/arguments.py: the chat's data and ML jobs are the tool steps' calls (`agent_steps`), their arguments built
  from a state made of the conversation's facts and the goal.
"""

from __future__ import annotations

import functools
import json
import math
import shutil
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from autooptimizer.errors import AutoOptError
from autooptimizer.ml.pipeline_data import feedback_step, holdout_folder, split_step


class MissingInput(Exception):
    """A call needs a value that the state does not hold (for the chat: neither earlier results nor the goal)."""

    def __init__(self, field: str, hint: str) -> None:
        super().__init__(f"{field}: {hint}")
        self.field, self.hint = field, hint


class PipelineState(BaseModel):
    """What the steps read and write. The first group is what a run is given, the rest what its steps learn."""

    model_config = ConfigDict(extra="forbid")

    env: str | None = None
    domain_data: str | None = Field(default=None, description="the new domain's BEIR folder or name")
    domain: str | None = Field(default=None, description="its name, as feedback records and datasets carry it")
    original: str | None = Field(default=None, description="the original domain: its train split is the "
                                 "diagnosis' and the expert gate's reference, its test split guards promotion")
    seed: int | None = None
    champion: str | None = Field(default=None, description="the version serving the traffic: explained, trained "
                                 "from, the reference of the evaluation")
    target: str | None = Field(default=None, description="a model the operator named (chat): explained, and "
                               "evaluated when no challenger was trained")
    artifacts: Path | None = Field(default=None, description="where the steps write artifacts (None: the tools')")
    feedback_log: Path | None = Field(default=None, description="the live feedback log (None: serve it offline)")
    holdout_file: str | None = None
    trainer: str | None = None
    adaptation: str | None = Field(default=None, description="a named adaptation (ml/adapt.py VARIANTS); None: the "
                                   "trainer's default")
    max_steps: int | None = None
    time_budget_s: float | None = None
    explainer: str | None = None
    fixed_eval_sets: bool = Field(default=False, description="chained repairs (the loop): hold out each domain's "
                                  "fixed evaluation set and run the forgetting guard (ml/forgetting.py)")
    cycle_id: str | None = None
    min_feedback: int | None = Field(default=None, description="judged feedback queries the live log must hold "
                                     "before training (the profile's retrain.minNewFeedback; None: no minimum)")
    # learned by the steps
    feedback_qids: list[str] = Field(default_factory=list)
    holdout: list[str] = Field(default_factory=list)
    feedback_path: str | None = None
    base_dataset: str | None = Field(default=None, description="dataset hash built from the feedback only")
    dataset: str | None = Field(default=None, description="dataset hash to train on (the augmented one once built)")
    dataset_queries: int | None = None
    verdict: str | None = None
    diagnosis: dict[str, Any] | None = None
    augmented_csv: str | None = None
    augmentation: dict[str, Any] | None = None
    challenger: str | None = None
    mlflow_run_id: str | None = None
    registered_version: str | None = None
    registered_model: str | None = None
    gold: str | None = None
    holdout_dir: str | None = None
    evaluations: dict[str, dict[str, Any]] = Field(default_factory=dict)
    challenger_ndcg10: float | None = None
    champion_ndcg10: float | None = None
    evaluation: dict[str, Any] | None = None
    forgetting: dict[str, Any] | None = None

    def learn(self, values: Mapping[str, Any]) -> None:
        """Take what a call read from its result (a None value never overwrites a known one)."""
        for key, value in values.items():
            if value is not None:
                setattr(self, key, value)


Reader = str | Callable[[dict[str, Any]], Any]  # a result key ("counts.queries", "sources.0.path") or a function


def pick(result: Any, path: str) -> Any:
    """The value at a dotted path of a tool result (list items by index); None where the path does not exist."""
    value = result
    for part in path.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


@dataclass(frozen=True)
class Call:
    """One tool call of a step. `name` is the chat's step name (agents/arguments.py builds and learns by it)."""

    name: str
    build: Callable[[PipelineState], dict[str, Any]]
    reads: Mapping[str, Reader] = field(default_factory=dict)  # state field <- result key or function of the result
    when: Callable[[PipelineState], bool] | None = None  # None: always, and a step of the chat's jobs
    key: str | None = None  # `evaluations` key of its result
    tool: str | None = None  # a call of another tool than its step's

    def args(self, state: PipelineState) -> dict[str, Any]:
        return {k: v for k, v in self.build(state).items() if v is not None}

    def read(self, result: Any) -> dict[str, Any]:
        if not isinstance(result, dict):
            return {}
        return {name: (r(result) if callable(r) else pick(result, r)) for name, r in self.reads.items()}


class ToolCaller(Protocol):
    def __call__(self, step: Step, call: Call, args: dict[str, Any], /) -> dict[str, Any]: ...


class StepRunner(Protocol):
    def __call__(self, step: Step, work: Callable[[], dict[str, Any]], inputs: dict[str, Any] | None, /
                 ) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Step:
    """One named step: its agent, its tool and calls, or `run` for a step that is more than one call."""

    name: str
    agent: str
    tool: str | None
    calls: tuple[Call, ...] = ()
    artifact: str | None = None
    run: Callable[[PipelineState, ToolCaller], dict[str, Any]] | None = None
    after: Callable[[PipelineState, dict[str, Any]], None] | None = None  # loop and repair: artifacts, checks
    optional: bool = False  # evidence only: the chat's job notes a failure and goes on
    needs: str | None = None  # skipped whenever this step is skipped


def _need(value: Any, name: str, hint: str) -> Any:
    if value is None:
        raise MissingInput(name, hint)
    return value


NO_DATASET = "name a dataset hash, or let the data agent build one from the feedback log"


def _out(state: PipelineState) -> str | None:
    return None if state.artifacts is None else str(state.artifacts)


def _base(state: PipelineState) -> str:
    return _need(state.base_dataset, "dataset", NO_DATASET)


# -- argument builders ----------------------------------------------------------------------------------------------
def _dataset_args(s: PipelineState) -> dict[str, Any]:
    return {"feedback_path": s.feedback_path, "parent_version": s.champion}


def _explain_args(s: PipelineState) -> dict[str, Any]:
    return {"dataset": _base(s), "model": s.target or s.champion, "explainer": s.explainer, "out_dir": _out(s),
            "reference_data": s.original}


def _augment_args(s: PipelineState) -> dict[str, Any]:
    from autooptimizer.loop.remedies import augment_size
    from autooptimizer.settings import get_settings

    dataset = _base(s)
    folder = s.artifacts if s.artifacts is not None else get_settings().home / "augment" / dataset
    return {"dataset": dataset, "out_csv": str(folder / "augmented_dataset.csv"),
            "size": augment_size(s.dataset_queries) if s.dataset_queries else None, "seed": s.seed}


def _final_args(s: PipelineState) -> dict[str, Any]:
    return {"feedback_path": s.feedback_path, "parent_version": s.champion,
            "augmented_csv": _need(s.augmented_csv, "augmented_csv", "augment the dataset first"),
            "from_dataset": _need(s.base_dataset, "from_dataset", "build the feedback dataset first"),
            "augmentation": s.augmentation}


def _train_args(s: PipelineState) -> dict[str, Any]:
    dataset = _need(s.dataset, "dataset", "name a dataset hash or folder, or ask to fix the reranker so the data "
                    "agent builds one")
    return {"dataset": dataset, "parent": s.champion, "trainer": s.trainer, "seed": s.seed, "max_steps": s.max_steps,
            "time_budget_s": s.time_budget_s, "original": s.original, "artifacts_dir": _out(s),
            "adaptation": s.adaptation}


def _register_args(s: PipelineState) -> dict[str, Any]:
    return {"version": _need(s.challenger, "version", "name the model version to register")}


def _model(s: PipelineState, side: str) -> str | None:
    if side == "challenger":
        return _need(s.challenger or s.target, "model", "name a model version or alias (champion, challenger, gold)")
    return (s.champion or "champion") if side == "champion" else s.gold


def _eval_args(side: str, on: str, s: PipelineState) -> dict[str, Any]:
    model = _model(s, side)
    if on == "original":
        return {"model": model, "data": s.original, "split": "test"}
    return {"model": model, "data": _need(s.holdout_dir or s.domain, "data",
                                          "name the dataset to evaluate on (e.g. scifact, or a BEIR folder)")}


def _eval_call(name: str, side: str, on: str, when: Callable[[PipelineState], bool] | None = None,
               reads: Mapping[str, Reader] | None = None) -> Call:
    return Call(name=name, build=functools.partial(_eval_args, side, on), reads=reads or {}, when=when,
                key=f"{side}/{on}")


def _cost_args(s: PipelineState) -> dict[str, Any]:
    """Both versions answer the held-out queries and the original domain's test queries in turn (once: a domain
    never appears twice, which the tool refuses)."""
    data = [_need(s.holdout_dir or s.domain, "data", "name the dataset to measure on")]
    if s.original and s.original != s.domain:  # a repair of the original domain measures its held-out half once
        data.append(f"{s.original}:test")
    return {"champion": s.champion or "champion", "challenger": _model(s, "challenger"), "data": data}


def _has_challenger(s: PipelineState) -> bool:
    return bool(s.challenger) and s.challenger != s.champion


def _guards_original(s: PipelineState) -> bool:
    return s.original is not None


def _has_gold(s: PipelineState) -> bool:
    return s.gold is not None


def _gold_original(s: PipelineState) -> bool:
    return s.gold is not None and s.original is not None


# -- what the loop and repair write beside a tool's own output ---------------------------------------------------------
def _copy_manifest(result: dict[str, Any], *targets: Path) -> None:
    from autooptimizer.ml.dataset import MANIFEST

    for target in targets:
        shutil.copyfile(Path(result["path"]) / MANIFEST, target)


def _after_dataset(s: PipelineState, result: dict[str, Any]) -> None:
    art = s.artifacts or Path(".")
    _copy_manifest(result, art / "base.dataset_manifest.yaml", art / "dataset_manifest.yaml")


def _after_final(s: PipelineState, result: dict[str, Any]) -> None:
    _copy_manifest(result, (s.artifacts or Path(".")) / "dataset_manifest.yaml")


def _after_train(s: PipelineState, result: dict[str, Any]) -> None:
    if not s.challenger or s.challenger == s.champion:
        raise AutoOptError(f"Training returned no new model version ({s.challenger!r}).",
                           "Check the train step (`autoopt loop show CYCLE`, or train_result.json).")
    if s.mlflow_run_id and s.artifacts is not None:
        (s.artifacts / "mlflow_run_id.txt").write_text(f"{s.mlflow_run_id}\n")


def _evaluate(s: PipelineState, call_tool: ToolCaller) -> dict[str, Any]:
    """Offline NDCG@10 on the held-out half and the original domain's test split, then the promotion rule."""
    from autooptimizer.ml.evaluate import promotion_rule
    from autooptimizer.search import aliases

    if s.holdout and s.artifacts is not None:
        s.holdout_dir = str(holdout_folder(s.domain_data or s.domain or "", s.holdout, s.artifacts / "holdout"))
    gold_v = aliases.get_alias(aliases.GOLD)
    s.gold = None if gold_v in (None, s.champion, s.challenger) else gold_v
    for call in EVALUATE.calls:
        if call.when is None or call.when(s):
            result = call_tool(EVALUATE, call, call.args(s))
            s.evaluations[call.key or call.name] = result
            s.learn(call.read(result))

    def scores(side: str, version: str | None) -> dict[str, Any]:
        new, orig = s.evaluations[f"{side}/new_domain"], s.evaluations.get(f"{side}/original", {})
        return {"version": version, "new_domain_ndcg@10": new["ndcg@10"], "original_ndcg@10": orig.get("ndcg@10"),
                "new_domain_mrr@10": new["mrr@10"], "new_domain_recall@100": new["recall@100"],
                "new_domain_queries": new["queries"], "original_queries": orig.get("queries")}

    champ, chall = scores("champion", s.champion), scores("challenger", s.challenger)
    gold = scores("gold", s.gold) if s.gold else None
    cost = s.evaluations.get("serving_cost") or {}
    ratio = cost.get("ratio") if isinstance(cost.get("ratio"), int | float) else None
    decision = promotion_rule(champ, chall, gold if gold is not None else champ, env=s.env,
                              serving_cost_ratio=ratio)
    doc = {"champion": champ, "challenger": chall, "gold": gold or {"version": gold_v, "same_as": "champion"},
           "promotable": decision.promotable, "reasons": decision.reasons,
           "new_domain_margin": decision.new_domain_margin, "original_tolerance": decision.original_tolerance,
           "serving_cost": cost or None,
           "holdout": {"folder": s.holdout_dir, "queries": len(s.holdout),
                       "note": "judged queries of the new domain the traffic never trained on"},
           "original": f"{s.original} test"}
    if s.fixed_eval_sets:
        guard = _forgetting(s, call_tool, gold_v)
        s.forgetting = doc["forgetting"] = guard
        doc["promotable"] = bool(doc["promotable"] and guard["ok"])
        doc["reasons"] = [*doc["reasons"], *guard["reasons"]]
    s.evaluation = doc
    if s.artifacts is not None:
        (s.artifacts / "evaluation.json").write_text(json.dumps(doc, indent=2))
    return doc


def _forgetting(s: PipelineState, call_tool: ToolCaller, gold_v: str | None) -> dict[str, Any]:
    """The forgetting guard (ml/forgetting.py): the challenger's NDCG@10 on every fixed evaluation set against
    max(best promoted, gold). This cycle's held-out set and the original test split reuse the evaluations above;
    every other set is one more gated evaluate_model call (gold's once per gold version and set, then cached)."""
    from autooptimizer.ml import forgetting as fg
    from autooptimizer.profiles import load_profile
    from autooptimizer.settings import get_settings

    tolerance = load_profile(s.env or get_settings().env).promotion.forgetting_tolerance
    try:
        sets, best = fg.load_sets(), fg.read_best()
    except fg.EvalSetError as exc:
        return fg.judge([], tolerance, [exc.problem]).model_dump(mode="json")
    rows = [_guard_row(s, es, best, call_tool, gold_v) for es in sets]
    return fg.judge(rows, tolerance).model_dump(mode="json")


def _guard_row(s: PipelineState, es: Any, best: Any, call_tool: ToolCaller, gold_v: str | None) -> Any:
    """One set's row: challenger, champion (where evaluated this cycle), gold and the best promoted value."""
    from autooptimizer.ml import forgetting as fg

    side_on = None
    if es.split is None and es.key == Path(s.domain_data or s.domain or "").name:
        side_on = "new_domain"
    elif es.split == "test" and s.original and es.domain == Path(s.original).name:
        side_on = "original"

    def score(side: str, model: str | None) -> float | None:
        if model is None:
            return None
        if side_on is not None and f"{side}/{side_on}" in s.evaluations:
            return s.evaluations[f"{side}/{side_on}"].get("ndcg@10")
        args = {"model": model, "data": es.data, "split": es.split, "qids_file": str(fg.qids_file(es))}
        call = Call(name="evaluate_guard", tool="evaluate_model", build=lambda _s: args, key=f"{side}/{es.key}")
        result = call_tool(EVALUATE, call, call.args(s))
        s.evaluations[f"{side}/guard/{es.key}"] = result
        return result.get("ndcg@10")

    challenger = score("challenger", s.challenger)
    gold = None
    if gold_v is not None:
        cached = fg.gold_score(best, es, gold_v)
        if gold_v == s.champion and side_on:
            gold = score("champion", gold_v)
        elif cached is not None and not (side_on and s.gold):
            gold = cached
        else:
            gold = score("gold", gold_v)
        if isinstance(gold, int | float) and math.isfinite(gold) and gold != cached:
            fg.remember_gold(es, gold_v, float(gold))
    champion = s.evaluations.get(f"champion/{side_on}", {}).get("ndcg@10") if side_on else None
    return fg.GuardRow(set=es.key, hash=es.hash, queries=len(es.qids), challenger=challenger,
                       champion=champion, gold=gold, best=(best.best.get(es.key) or {}).get("ndcg@10"))


def _one_domain(result: dict[str, Any]) -> str | None:
    domains = result.get("domains") or []
    return domains[0] if len(domains) == 1 else None


EVALUATE = Step(
    name="evaluate", agent="ml", tool="evaluate_model", artifact="evaluation.json", run=_evaluate, calls=(
        _eval_call("evaluate_model", "challenger", "new_domain", reads={"challenger_ndcg10": "ndcg@10"}),
        _eval_call("evaluate_champion", "champion", "new_domain", reads={"champion_ndcg10": "ndcg@10"}),
        _eval_call("evaluate_challenger_original", "challenger", "original", _guards_original),
        _eval_call("evaluate_champion_original", "champion", "original", _guards_original),
        _eval_call("evaluate_gold", "gold", "new_domain", _has_gold),
        _eval_call("evaluate_gold_original", "gold", "original", _gold_original),
        Call(name="measure_serving_cost", tool="measure_serving_cost", build=_cost_args, when=_has_challenger,
             key="serving_cost")))

PIPELINE: tuple[Step, ...] = (
    Step(name="split", agent="data", tool=None, artifact="split.json", run=lambda s, _c: split_step(s)),
    Step(name="feedback", agent="data", tool=None, artifact="feedback.jsonl", run=lambda s, _c: feedback_step(s)),
    Step(name="dataset", agent="data", tool="build_dataset", artifact="base.dataset_manifest.yaml",
         after=_after_dataset, calls=(Call("build_dataset", _dataset_args, reads={
             "base_dataset": "hash", "dataset": "hash", "feedback_path": "sources.0.path",
             "dataset_queries": "counts.queries", "domain": _one_domain}),)),
    Step(name="diagnose", agent="data", tool="explain_reranker", artifact="diagnostic_report.json", optional=True,
         calls=(Call("explain_reranker", _explain_args, reads={
             "verdict": "verdict",
             "diagnosis": lambda r: {k: r.get(k) for k in ("verdict", "jsd", "under_weighted_terms")}}),)),
    Step(name="augment", agent="data", tool="augment_dataset", artifact="augmented_dataset.csv",
         calls=(Call("augment_dataset", _augment_args, reads={
             "augmented_csv": "path",
             "augmentation": lambda r: {k: r.get(k) for k in ("methods", "rows", "seed", "weak_queries")}}),)),
    Step(name="dataset_final", agent="data", tool="build_dataset", artifact="dataset_manifest.yaml", needs="augment",
         after=_after_final, calls=(Call("build_augmented_dataset", _final_args, reads={"dataset": "hash"}),)),
    Step(name="train", agent="ml", tool="train_reranker", artifact="mlflow_run_id.txt", after=_after_train,
         calls=(Call("train_reranker", _train_args, reads={"challenger": "version", "mlflow_run_id": "run_id"}),)),
    Step(name="register", agent="ml", tool="register_model", calls=(Call("register_model", _register_args, reads={
        "registered_version": "mlflow_version", "registered_model": "name"}),)),
    EVALUATE,
)
STEP_NAMES: tuple[str, ...] = tuple(s.name for s in PIPELINE)


def step(name: str) -> Step:
    return next(s for s in PIPELINE if s.name == name)


def agent_steps(agent: str) -> list[tuple[Step, Call]]:
    """The chat's steps of `agent`'s pipeline job, in order: every unconditional call of its tool steps."""
    return [(s, c) for s in PIPELINE if s.agent == agent and s.tool for c in s.calls if c.when is None]


def agent_tools(agent: str) -> tuple[str, ...]:
    """The tools `agent` uses in the pipeline, in order of first use."""
    return tuple(dict.fromkeys(s.tool for s in PIPELINE if s.agent == agent and s.tool))


def calls() -> dict[str, tuple[Step, Call]]:
    """Every call by its name (the chat's step names)."""
    return {c.name: (s, c) for s in PIPELINE for c in s.calls}


def execute(step: Step, state: PipelineState, call_tool: ToolCaller, inputs: dict[str, Any] | None
            ) -> dict[str, Any]:
    """Run one step on `state`: its `run`, or its single call with `inputs["args"]`; then its artifacts."""
    if step.run is not None:
        out = step.run(state, call_tool)
    else:
        call = step.calls[0]
        out = call_tool(step, call, (inputs or {}).get("args", call.args(state)))
        state.learn(call.read(out))
    if step.after is not None and state.artifacts is not None:
        step.after(state, out)
    return out


def run(state: PipelineState, *, call_tool: ToolCaller, run_step: StepRunner, skip: Collection[str] = ()
        ) -> PipelineState:
    """Every step in order (those in `skip`, and steps that need them, left out); `run_step` wraps each step (the
    loop journals it, repair records it) and `call_tool` makes each call."""
    for s in PIPELINE:
        if s.name in skip or (s.needs is not None and s.needs in skip):
            continue
        inputs = {"args": s.calls[0].args(state)} if s.run is None else None
        run_step(s, functools.partial(execute, s, state, call_tool, inputs), inputs)
    return state


__all__ = ["EVALUATE", "PIPELINE", "STEP_NAMES", "Call", "MissingInput", "PipelineState", "Step", "StepRunner",
           "ToolCaller", "agent_steps", "agent_tools", "calls", "execute", "pick", "run", "step"]
