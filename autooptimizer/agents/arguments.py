"""Tool arguments for the offline planner's playbook steps, built explicitly per step for the real tools' args
models (`autooptimizer/tools/{metrics,data,ml,devops}.py`).

Each step of playbooks.yaml has a builder here, under the step's name; the data and ML steps' builders and learners
are the retrain pipeline's (ml/pipeline.py: the same calls the loop and `autoopt repair` make), over a pipeline
state made of the conversation's facts and the goal (`pipeline_state`), and the devops remedies are sized by
loop/remedies.py as the loop sizes them. A builder reads, and only reads:

1. `Facts` learned from earlier steps of this conversation: the dataset hash `build_dataset` returned, the version
   `train_reranker` trained, the A/B verdict, ... They name the exact objects this run made, so they win over
   the goal for those objects. They travel between agents in the DELEGATE / REPORT blocks;
2. what the goal explicitly asks for (`GoalFacts`: versions, weights, paths, dataset names, trainer, budget);
3. the environment profile (canary weight) and AUTOOPT_HOME (where an augmented CSV is written).

A value none of them gives is left out, so the tool's own default applies; a value the step cannot do without
raises `MissingInput` and the agent asks for it. Facts only ever fill typed arguments: the PDP decides each call
on facts the registry computes itself from system state.

After a step ran, the learner of the same name turns its result into `Facts` for the later steps.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from autooptimizer.agents.goal import GoalFacts
from autooptimizer.loop.remedies import MAX_REPLICAS, cheaper_variant, next_replicas
from autooptimizer.ml import pipeline
from autooptimizer.ml.pipeline import Call, MissingInput, PipelineState
from autooptimizer.search import metric_names as m

# the pipeline state's names for what Facts calls otherwise
FACT_NAMES = {"challenger": "model_version"}


class Facts(BaseModel):
    """What the agents learned so far in one conversation, by name. Plain values; never permissions."""

    model_config = ConfigDict(extra="ignore")

    metric_value: float | None = None  # the first sample query_metrics read
    metric_error: str | None = None  # why query_metrics read nothing (e.g. Prometheus unreachable)
    gates: dict[str, str] | None = None  # gate name -> ok | firing | unknown
    gates_firing: list[str] | None = None
    gates_all_ok: bool | None = None
    feedback_path: str | None = None  # the feedback log the datasets were built from
    base_dataset: str | None = None  # dataset hash built from feedback only (diagnosed and augmented)
    dataset: str | None = None  # dataset hash to train on (the augmented one once augmentation ran)
    dataset_queries: int | None = None
    domain: str | None = None  # the traffic's dataset name under AUTOOPT_DATA_DIR (for offline evaluation)
    verdict: str | None = None  # the diagnosis: corpus_shift | model_regression | data_issue
    augmented_csv: str | None = None
    model_version: str | None = None  # the challenger trained in this conversation
    mlflow_run_id: str | None = None
    challenger_ndcg10: float | None = None
    champion_ndcg10: float | None = None
    registered_version: str | None = None  # MLflow registry version number
    canary_revision: str | None = None
    ab_verdict: str | None = None  # pass | fail | inconclusive
    promoted_revision: str | None = None
    replicas: int | None = None
    rerank_depth: int | None = None

    def public(self) -> dict:
        return self.model_dump(exclude_none=True)

    @classmethod
    def lenient(cls, raw: dict) -> Facts:
        """Facts from a DELEGATE/REPORT block (written by whatever model ran): a value of the wrong type is
        dropped, never coerced into an argument."""
        try:
            return cls.model_validate(raw)
        except ValidationError:
            good: dict[str, Any] = {}
            for key, value in raw.items():
                with contextlib.suppress(ValidationError):
                    cls.model_validate({key: value})
                    good[key] = value
            return cls.model_validate(good)


@dataclass
class StepContext:
    goal_text: str
    goal: GoalFacts
    env: str
    facts: Facts


Builder = Callable[[StepContext], dict[str, Any]]
BUILDERS: dict[str, Builder] = {}
LEARNERS: dict[str, Callable[[dict], dict[str, Any]]] = {}
CONDITIONS: dict[str, Callable[[StepContext], bool]] = {}


def builder(name: str) -> Callable[[Builder], Builder]:
    def wrap(fn: Builder) -> Builder:
        BUILDERS[name] = fn
        return fn

    return wrap


def learner(name: str) -> Callable[[Callable[[dict], dict]], Callable[[dict], dict]]:
    def wrap(fn: Callable[[dict], dict]) -> Callable[[dict], dict]:
        LEARNERS[name] = fn
        return fn

    return wrap


def build_args(step: str, ctx: StepContext) -> dict[str, Any]:
    """The arguments of one playbook step (None values dropped, so the tool's defaults apply)."""
    return {k: v for k, v in BUILDERS[step](ctx).items() if v is not None}


def learn(step: str, result: Any) -> dict[str, Any]:
    """Named facts from a step's result (nothing for steps without a learner or a non-dict result)."""
    fn = LEARNERS.get(step)
    if fn is None or not isinstance(result, dict):
        return {}
    return {k: v for k, v in fn(result).items() if v is not None}


def condition(name: str, ctx: StepContext) -> bool:
    return CONDITIONS[name](ctx)


def _need(value: Any, field: str, hint: str) -> Any:
    if value is None:
        raise MissingInput(field, hint)
    return value


def _is_feedback_log(path: str | None) -> bool:
    return bool(path and path.endswith(".jsonl"))


def _profile(env: str) -> Any:
    from autooptimizer.profiles import load_profile

    return load_profile(env)


# --- conditions ------------------------------------------------------------------------------------------------
CONDITIONS["no_dataset"] = lambda ctx: not (ctx.facts.base_dataset or ctx.goal.dataset_hash)
CONDITIONS["ab_passed"] = lambda ctx: ctx.facts.ab_verdict == "pass"


# --- metrics ---------------------------------------------------------------------------------------------------
@builder("query_metrics")
def _query_metrics(ctx: StepContext) -> dict:
    """The PromQL for the problem the goal names: p95 latency, spend, errors, else served NDCG@10."""
    text = ctx.goal_text.lower()
    if re.search(r"\b(latency|p95|slow|slower)\b", text):
        promql = f"histogram_quantile(0.95, sum(rate({m.REQUEST_SECONDS}_bucket[5m])) by (le))"
    elif re.search(r"\b(cost|budget|spend|spending|spent)\b", text):
        promql = f"sum({m.COST_TOTAL})"
    elif re.search(r"\berrors?\b", text):
        promql = f"sum(rate({m.ERRORS_TOTAL}[5m]))"
    else:
        promql = f"sum(rate({m.FEEDBACK_NDCG}_sum[5m])) / sum(rate({m.FEEDBACK_NDCG}_count[5m]))"
    return {"promql": promql}


@learner("query_metrics")
def _learn_metric(r: dict) -> dict:
    samples = r.get("samples") or []
    value = samples[0].get("value") if samples and isinstance(samples[0], dict) else None
    return {"metric_value": value if isinstance(value, int | float) and value == value else None,
            "metric_error": (r.get("error") or "")[:200] or None}


@builder("check_quality_gates")
def _check_quality_gates(ctx: StepContext) -> dict:
    return {"env": ctx.env}


@learner("check_quality_gates")
def _learn_gates(r: dict) -> dict:
    gates = r.get("gates") or []
    return {"gates": {str(g.get("name")): str(g.get("status")) for g in gates},
            "gates_firing": list(r.get("firing") or []),
            "gates_all_ok": bool(gates) and all(g.get("status") == "ok" for g in gates)}


# --- data and ml: the retrain pipeline's calls (ml/pipeline.py) -------------------------------------------------
def pipeline_state(ctx: StepContext) -> PipelineState:
    """The pipeline state a chat step reads: this conversation's facts first, then what the goal names. The chat has
    no artifacts folder, held-out split or original-domain guard (the supervisor compares challenger and champion on
    the same data instead, `planner.offline_regression`)."""
    facts, goal = ctx.facts, ctx.goal
    log = goal.path if _is_feedback_log(goal.path) else None
    folder = goal.path if goal.path and not log else None
    return PipelineState(
        feedback_path=facts.feedback_path or log, base_dataset=facts.base_dataset or goal.dataset_hash,
        dataset=facts.dataset or goal.dataset_hash or folder, dataset_queries=facts.dataset_queries,
        domain=facts.domain or goal.dataset or goal.path, augmented_csv=facts.augmented_csv,
        challenger=facts.model_version or goal.model_version, target=goal.model_version or goal.alias,
        explainer="lime" if re.search(r"\blime\b", ctx.goal_text, re.I) else None, trainer=goal.trainer,
        max_steps=goal.steps, time_budget_s=goal.seconds)


def _pipeline_args(call: Call, ctx: StepContext) -> dict[str, Any]:
    return call.build(pipeline_state(ctx))


def _pipeline_facts(call: Call, result: dict) -> dict[str, Any]:
    """What a pipeline call reads from its result, under Facts' names (values Facts has no field for dropped)."""
    read = {FACT_NAMES.get(k, k): v for k, v in call.read(result).items()}
    return {k: v for k, v in read.items() if k in Facts.model_fields}


for _name, (_step, _call) in pipeline.calls().items():
    BUILDERS[_name] = functools.partial(_pipeline_args, _call)
    LEARNERS[_name] = functools.partial(_pipeline_facts, _call)


# --- ml --------------------------------------------------------------------------------------------------------
@builder("delete_model")
def _delete_model(ctx: StepContext) -> dict:
    return {"version": _need(ctx.goal.model_version, "version", "name the model version to delete")}


@builder("set_model_alias")
def _set_model_alias(ctx: StepContext) -> dict:
    return {"alias": _need(ctx.goal.alias, "alias", "say which alias: champion, challenger or gold"),
            "version": _need(ctx.goal.model_version, "version", "name the model version the alias points at")}


# --- devops ----------------------------------------------------------------------------------------------------
def _release_version(ctx: StepContext) -> str:
    return _need(ctx.facts.model_version or ctx.goal.model_version, "model_version",
                 "name the model version, or ask to fix the reranker so the ml agent trains one")


@builder("deploy_canary")
def _deploy_canary(ctx: StepContext) -> dict:
    """The challenger at the goal's weight, else the environment profile's canary weight."""
    return {"model_version": _release_version(ctx),
            "weight": ctx.goal.canary_weight or _profile(ctx.env).ab_test.canary_weight}


@learner("deploy_canary")
def _learn_canary(r: dict) -> dict:
    return {"canary_revision": r.get("revision")}


@builder("start_ab_test")
def _start_ab_test(ctx: StepContext) -> dict:
    """The running canary against the stable version; sample count and duration from the profile unless the
    goal names a sample count."""
    return {"model_version": _release_version(ctx), "min_samples": ctx.goal.samples}


@learner("start_ab_test")
def _learn_ab(r: dict) -> dict:
    return {"ab_verdict": r.get("verdict")}


@builder("promote_model")
def _promote_model(ctx: StepContext) -> dict:
    return {"model_version": _release_version(ctx)}


@learner("promote_model")
def _learn_promoted(r: dict) -> dict:
    return {"promoted_revision": r.get("revision")}


@builder("rollback_deployment")
def _rollback_deployment(ctx: StepContext) -> dict:
    """The goal's revision or cycle, else the latest deployment commit (the tool's default)."""
    return {"reason": f"requested by the operator's goal: {ctx.goal_text[:200]}", "revision": ctx.goal.revision,
            "cycle_id": ctx.goal.cycle_id}


def _deployed(env: str) -> Any:
    """The desired state of `env` in the local GitOps repo, read straight from its bare repository (never creates or
    syncs a checkout, so it cannot disturb a deployment in progress); None when there is none."""
    import subprocess
    from pathlib import Path

    from autooptimizer.loop.gitops import BRANCH, GitOpsRepo, HelmPatch
    from autooptimizer.settings import get_settings

    repo = GitOpsRepo(get_settings(), env)
    if not repo.local_bare or not (Path(repo.remote) / "HEAD").exists():
        return None
    proc = subprocess.run(["git", "--git-dir", repo.remote, "show", f"{BRANCH}:{repo.rel_path}"],
                          capture_output=True, text=True, timeout=30)
    try:
        return HelmPatch.from_yaml(proc.stdout) if proc.returncode == 0 else None
    except Exception:  # noqa: BLE001 - an unreadable patch leaves the value to the goal or to a question
        return None


@builder("scale_service")
def _scale_service(ctx: StepContext) -> dict:
    """The goal's replica count, else the latency remedy's next count from the deployed one (double, up to
    MAX_REPLICAS: loop/remedies.py, as the loop scales)."""
    if ctx.goal.replicas is not None:
        return {"replicas": ctx.goal.replicas}
    current = ctx.facts.replicas or getattr(_deployed(ctx.env), "replicas", None)
    if current is None:
        raise MissingInput("replicas", "say how many replicas (the deployed count is unknown)")
    if next_replicas(current) == current:
        raise MissingInput("replicas", f"{current} replicas is the remedy's ceiling ({MAX_REPLICAS}); say how many, "
                           "or ask for a cheaper variant")
    return {"replicas": next_replicas(current)}


@learner("scale_service")
def _learn_replicas(r: dict) -> dict:
    return {"replicas": r.get("replicas")}


@builder("switch_variant")
def _switch_variant(ctx: StepContext) -> dict:
    """The goal's rerank depth, else the cheaper variant of the deployed one (loop/remedies.py, as the loop's cost
    remedy)."""
    if ctx.goal.rerank_depth is not None:
        return {"rerank_depth": ctx.goal.rerank_depth}
    return cheaper_variant(ctx.facts.rerank_depth or getattr(_deployed(ctx.env), "rerank_depth", None))


@learner("switch_variant")
def _learn_depth(r: dict) -> dict:
    return {"rerank_depth": r.get("rerank_depth")}
