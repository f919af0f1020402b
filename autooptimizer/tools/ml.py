"""The ML agent's tools: train, evaluate, register, delete and alias model versions.

`train_reranker` supplies `estimated_cost` (compute-seconds of its time budget x the profile's price) and
`budget_remaining` (the profile's budget minus the spend Prometheus reports; left out whenever the spend is unknown),
so the PDP can refuse training that would overrun the budget. `delete_model` and `set_model_alias` supply the
protected-object facts of `tools/protection.py` (gold, champion, serving, canary, safe point, rollback window), and
`set_model_alias` also `alias_consistent` (the alias move keeps the registry in step with git).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, model_validator

from autooptimizer.errors import InputError
from autooptimizer.tools.context import ToolContext
from autooptimizer.tools.registry import tool

if TYPE_CHECKING:
    from autooptimizer.ml.train import TrainConfig


class TrainRerankerArgs(BaseModel):
    dataset: str = Field(description="dataset hash")
    parent: str = Field("champion", description="alias or version to start from")
    trainer: Literal["ltr", "bi_encoder", "cross_encoder"] = "ltr"
    seed: int = 0
    max_steps: int = Field(200, ge=1, le=100000)
    time_budget_s: float = Field(900.0, gt=0, le=86400)
    original: str = Field("scifact", description="the original domain (BEIR folder or name): replay pairs and the "
                          "expert gate's reference queries")
    artifacts_dir: str | None = Field(None, description="folder for train_result.json (and neural checkpoints)")
    adaptation: str | None = Field(None, description="a named unsupervised adaptation (ml/adapt.py VARIANTS, e.g. "
                                   "pq_crop2000); None: the trainer's default")

    @model_validator(mode="after")
    def _method(self) -> TrainRerankerArgs:
        """An unknown adaptation, or one the trainer cannot honour, is refused with the arguments: before the PDP
        and any approval, not after a permit of a call that could only fail."""
        from pydantic import ValidationError

        if self.adaptation is not None:
            try:
                self.config()
            except (InputError, ValidationError) as exc:
                msg = str(exc) if isinstance(exc, InputError) else exc.errors()[0]["msg"]
                raise ValueError(f"adaptation {self.adaptation!r} with trainer {self.trainer}: {msg}") from None
        return self

    def config(self) -> TrainConfig:
        """The training configuration these arguments name."""
        from autooptimizer.ml.adapt import variant
        from autooptimizer.ml.train import TrainConfig

        cfg: dict[str, Any] = {"trainer": self.trainer, "seed": self.seed, "max_steps": self.max_steps,
                               "time_budget_s": self.time_budget_s, "original": self.original}
        if self.adaptation is not None:  # validated as a whole: a neural trainer refuses what it cannot honour
            cfg["adaptation"] = variant(self.adaptation)
        return TrainConfig.model_validate(cfg)


class EvaluateModelArgs(BaseModel):
    model: str = Field(description="alias (champion|challenger|gold), version id or model folder")
    data: str = Field(description="BEIR folder or dataset name under AUTOOPT_DATA_DIR")
    split: str | None = None
    qids_file: str | None = Field(None, description="evaluate only these query ids (one per line): a held-out set")


class RegisterModelArgs(BaseModel):
    version: str


class DeleteModelArgs(BaseModel):
    version: str


class SetModelAliasArgs(BaseModel):
    alias: Literal["champion", "challenger", "gold"]
    version: str


def _train_facts(args: TrainRerankerArgs, ctx: ToolContext) -> dict[str, Any]:
    cost = ctx.profile.cost
    spent = spent_so_far(ctx.settings.prometheus_url)
    return {"estimated_cost": round(args.time_budget_s * cost.price_per_compute_second, 6),
            "budget_remaining": None if spent is None else round(max(cost.budget - spent, 0.0), 6)}


def spent_so_far(prometheus_url: str) -> float | None:
    """Dollars spent so far: the sum of the search service's cost counter in Prometheus.

    None whenever the spend is not known - Prometheus unreachable or erroring, or no cost series at all (the
    exporter stopped, or the service never reported). A missing series is not zero spend: the budget fact is then
    left out, and the PDP asks a human (`shared.train-over-budget`) instead of reading the whole budget as free.
    """
    from autooptimizer.promql import query
    from autooptimizer.search.metric_names import COST_TOTAL

    spent = query(f"sum({COST_TOTAL})", prometheus_url, timeout=2.0).single_value()
    return None if spent is None or spent < 0 else spent


def _delete_facts(args: DeleteModelArgs, ctx: ToolContext) -> dict[str, Any]:
    from autooptimizer.tools.protection import protection_facts

    return protection_facts(args.version, ctx.settings, ctx.profile.loop.rollback_depth)


def _alias_facts(args: SetModelAliasArgs, ctx: ToolContext) -> dict[str, Any]:
    """Moving `gold` is re-aliasing a gold baseline; `champion` must follow what git serves in this env, so the
    registry never disagrees with the deployment; `challenger` may not be moved off a running canary."""
    from autooptimizer.search import aliases
    from autooptimizer.tools.protection import desired_states, protection_facts

    facts = protection_facts(args.version, ctx.settings, ctx.profile.loop.rollback_depth)
    desired = desired_states(ctx.settings)
    here = desired.get(ctx.env)
    if args.alias == "gold":
        consistent = False
    elif args.alias == "champion":
        consistent = here is not None and here.model_version == args.version
    else:
        holder = aliases.get_alias(aliases.CHALLENGER)
        canaries = {p.canary_version for p in desired.values() if p is not None}
        consistent = holder is None or holder == args.version or holder not in canaries
    return {**facts, "target_is_gold": args.alias == "gold", "alias_consistent": consistent}


@tool(name="train_reranker", owner="ml", risk="change", facts=_train_facts)
def train_reranker(args: TrainRerankerArgs, ctx: ToolContext) -> dict[str, Any]:
    """Train a challenger on a dataset (ltr expert, bi-encoder or cross-encoder), log to MLflow, alias `challenger`."""
    from autooptimizer.ml.evaluate import resolve_model
    from autooptimizer.ml.train import train

    res = train(args.dataset, parent_version=resolve_model(args.parent).version, cfg=args.config(),
                artifacts_dir=args.artifacts_dir)
    return {"version": res.version, "run_id": res.run_id, "trainer": res.trainer, "device": res.device,
            "wall_seconds": res.wall_seconds, "metrics": res.metrics}


@tool(name="evaluate_model", owner="ml", risk="read")
def evaluate_model(args: EvaluateModelArgs, ctx: ToolContext) -> dict[str, Any]:
    """nDCG@10, MRR@10 and Recall@100 of a model on a BEIR folder."""
    from autooptimizer.ml.evaluate import evaluate_spec, resolve_model

    spec = resolve_model(args.model)
    qids = None
    if args.qids_file:
        from autooptimizer.ml.feedback import read_qids

        qids = set(read_qids(args.qids_file))
    result = evaluate_spec(spec, ctx.settings.dataset(args.data), split=args.split, qids=qids)
    return {**result.public(), "version": spec.version}


class MeasureServingCostArgs(BaseModel):
    champion: str = Field(description="alias or version serving now")
    challenger: str = Field(description="alias or version to compare")
    data: list[str] = Field(min_length=1, max_length=4, description="BEIR folders or dataset names, each "
                            "optionally `name:split` (e.g. a held-out folder and `scifact:test`)")
    queries: int = Field(default=40, ge=5, le=300, description="queries per dataset, answered by both in turn")


@tool(name="measure_serving_cost", owner="ml", risk="read")
def measure_serving_cost(args: MeasureServingCostArgs, ctx: ToolContext) -> dict[str, Any]:
    """CPU time per query of challenger vs champion, side by side in one process; `ratio` is the worst domain's, an
    excess within the noise floor counting as 1.0 (search/serving_cost.budget_ratio). Each domain row names its
    `clock` and what each version ran (vectors encoded vs cached, reranked searches, stage medians)."""
    from autooptimizer.ml.evaluate import resolve_model
    from autooptimizer.search.serving_cost import budget_ratio, serving_cost

    pairs: list[tuple[str, str | None]] = []
    for item in args.data:
        name, _, split = item.partition(":")
        pairs.append((str(ctx.settings.dataset(name)), split or None))
    names = [Path(p).name for p, _ in pairs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:  # checked before any model loads: the union collection would refuse it after minutes of warm-up
        raise InputError(f"measure_serving_cost got the dataset name(s) {dup} more than once ({args.data}); both "
                         "versions serve one collection of the named datasets, so each name may appear once.",
                         "Name each domain once: its held-out folder OR `name:test`, not both.")
    rows = serving_cost(resolve_model(args.champion).version, resolve_model(args.challenger).version, pairs,
                        queries=args.queries)
    return {"domains": [r.model_dump() for r in rows], "ratio": budget_ratio(rows)}


@tool(name="register_model", owner="ml", risk="change")
def register_model(args: RegisterModelArgs, ctx: ToolContext) -> dict[str, Any]:
    """Register a stored model version in the MLflow model registry (idempotent)."""
    from autooptimizer.ml import model_registry as registry

    return registry.register_model(args.version).model_dump()


@tool(name="delete_model", owner="ml", risk="critical", facts=_delete_facts)
def delete_model(args: DeleteModelArgs, ctx: ToolContext) -> dict[str, Any]:
    """Delete a stored model version and its registry entry (refused while an alias or a child uses it)."""
    from autooptimizer.ml import model_registry as registry

    return registry.delete_model(args.version)


@tool(name="set_model_alias", owner="ml", risk="critical", facts=_alias_facts)
def set_model_alias(args: SetModelAliasArgs, ctx: ToolContext) -> dict[str, Any]:
    """Point champion, challenger or gold at a stored version (aliases.json and the MLflow registry)."""
    from autooptimizer.ml import model_registry as registry

    return registry.set_alias(args.alias, args.version).model_dump()
