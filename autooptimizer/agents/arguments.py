"""Tool arguments for the offline planner's playbook steps, built explicitly per step for the real tools' args
models (`autooptimizer/tools/{metrics,data,ml,devops}.py`).

Each step of playbooks.yaml has a builder here, under the step's name. A builder reads, and only reads:

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
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from autooptimizer.agents.goal import GoalFacts
from autooptimizer.search import metric_names as m

AUGMENT_MIN_ROWS = 8  # augmented variants: one per feedback query, at least this many (as `autoopt repair` does)
DEFAULT_RERANK_DEPTH = 50  # what the service reranks when the deployed state names no depth
MIN_RERANK_DEPTH = 10


class MissingInput(Exception):
    """A step needs a value that neither earlier results nor the goal give."""

    def __init__(self, field: str, hint: str) -> None:
        super().__init__(f"{field}: {hint}")
        self.field, self.hint = field, hint


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


# --- data ------------------------------------------------------------------------------------------------------
@builder("build_dataset")
def _build_dataset(ctx: StepContext) -> dict:
    """From the goal's feedback log (a .jsonl path), else the service's own log (the tool's default)."""
    return {"feedback_path": ctx.goal.path if _is_feedback_log(ctx.goal.path) else None}


@learner("build_dataset")
def _learn_dataset(r: dict) -> dict:
    domains = r.get("domains") or []
    sources = r.get("sources") or [{}]
    return {"base_dataset": r.get("hash"), "dataset": r.get("hash"), "feedback_path": sources[0].get("path"),
            "dataset_queries": (r.get("counts") or {}).get("queries"),
            "domain": domains[0] if len(domains) == 1 else None}


@builder("explain_reranker")
def _explain_reranker(ctx: StepContext) -> dict:
    """Explain the model serving the traffic (the champion, unless the goal names one) on the feedback dataset."""
    dataset = _need(ctx.facts.base_dataset or ctx.goal.dataset_hash, "dataset",
                    "name a dataset hash, or let the data agent build one from the feedback log")
    return {"dataset": dataset, "model": ctx.goal.model_version or ctx.goal.alias,
            "explainer": "lime" if re.search(r"\blime\b", ctx.goal_text, re.I) else None}


@learner("explain_reranker")
def _learn_diagnosis(r: dict) -> dict:
    return {"verdict": r.get("verdict")}


@builder("augment_dataset")
def _augment_dataset(ctx: StepContext) -> dict:
    """Variants of the weak slice of the feedback dataset, written under AUTOOPT_HOME/augment/<hash>/."""
    from autooptimizer.settings import get_settings

    dataset = _need(ctx.facts.base_dataset or ctx.goal.dataset_hash, "dataset",
                    "name a dataset hash, or let the data agent build one from the feedback log")
    queries = ctx.facts.dataset_queries
    return {"dataset": dataset,
            "out_csv": str(get_settings().home / "augment" / dataset / "augmented_dataset.csv"),
            "size": min(max(AUGMENT_MIN_ROWS, queries), 5000) if queries else None}


@learner("augment_dataset")
def _learn_augmented(r: dict) -> dict:
    return {"augmented_csv": r.get("path")}


@builder("build_augmented_dataset")
def _build_augmented_dataset(ctx: StepContext) -> dict:
    """The feedback dataset plus its augmented queries: the dataset training uses."""
    return {"feedback_path": ctx.facts.feedback_path,
            "augmented_csv": _need(ctx.facts.augmented_csv, "augmented_csv", "augment the dataset first"),
            "from_dataset": _need(ctx.facts.base_dataset, "from_dataset", "build the feedback dataset first")}


@learner("build_augmented_dataset")
def _learn_augmented_dataset(r: dict) -> dict:
    return {"dataset": r.get("hash")}


# --- ml --------------------------------------------------------------------------------------------------------
def _dataset_to_train(ctx: StepContext) -> str:
    path = ctx.goal.path if ctx.goal.path and not _is_feedback_log(ctx.goal.path) else None
    return _need(ctx.facts.dataset or ctx.goal.dataset_hash or path, "dataset",
                 "name a dataset hash or folder, or ask to fix the reranker so the data agent builds one")


def _eval_data(ctx: StepContext) -> str:
    return _need(ctx.facts.domain or ctx.goal.dataset or ctx.goal.path, "data",
                 "name the dataset to evaluate on (e.g. scifact, or a BEIR folder)")


@builder("train_reranker")
def _train_reranker(ctx: StepContext) -> dict:
    """A challenger from the champion on this conversation's dataset; trainer, steps and time budget only when
    the goal says so (the tool's defaults otherwise)."""
    return {"dataset": _dataset_to_train(ctx), "trainer": ctx.goal.trainer, "max_steps": ctx.goal.steps,
            "time_budget_s": ctx.goal.seconds}


@learner("train_reranker")
def _learn_trained(r: dict) -> dict:
    return {"model_version": r.get("version"), "mlflow_run_id": r.get("run_id")}


@builder("evaluate_model")
def _evaluate_model(ctx: StepContext) -> dict:
    model = _need(ctx.facts.model_version or ctx.goal.model_version or ctx.goal.alias, "model",
                  "name a model version or alias (champion, challenger, gold)")
    return {"model": model, "data": _eval_data(ctx)}


@learner("evaluate_model")
def _learn_challenger_score(r: dict) -> dict:
    return {"challenger_ndcg10": r.get("ndcg@10")}


@builder("evaluate_champion")
def _evaluate_champion(ctx: StepContext) -> dict:
    """The champion on the same data, so the challenger's score has its reference."""
    return {"model": "champion", "data": _eval_data(ctx)}


@learner("evaluate_champion")
def _learn_champion_score(r: dict) -> dict:
    return {"champion_ndcg10": r.get("ndcg@10")}


@builder("register_model")
def _register_model(ctx: StepContext) -> dict:
    return {"version": _need(ctx.facts.model_version or ctx.goal.model_version, "version",
                             "name the model version to register")}


@learner("register_model")
def _learn_registered(r: dict) -> dict:
    return {"registered_version": r.get("mlflow_version")}


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
    """The goal's replica count, else one more than deployed."""
    if ctx.goal.replicas is not None:
        return {"replicas": ctx.goal.replicas}
    current = ctx.facts.replicas or getattr(_deployed(ctx.env), "replicas", None)
    return {"replicas": _need(current + 1 if current else None, "replicas",
                              "say how many replicas (the deployed count is unknown)")}


@learner("scale_service")
def _learn_replicas(r: dict) -> dict:
    return {"replicas": r.get("replicas")}


@builder("switch_variant")
def _switch_variant(ctx: StepContext) -> dict:
    """The goal's rerank depth, else half the deployed one (cheaper), as the loop's cost remedy does."""
    if ctx.goal.rerank_depth is not None:
        return {"rerank_depth": ctx.goal.rerank_depth}
    current = ctx.facts.rerank_depth or getattr(_deployed(ctx.env), "rerank_depth", None) or DEFAULT_RERANK_DEPTH
    return {"rerank_depth": max(MIN_RERANK_DEPTH, current // 2)}


@learner("switch_variant")
def _learn_depth(r: dict) -> dict:
    return {"rerank_depth": r.get("rerank_depth")}
