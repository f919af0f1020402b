"""The ML agent's tools: train, evaluate, register, delete and alias model versions.

`train_reranker` supplies `estimated_cost` (compute-seconds of its time budget x the profile's price) and
`budget_remaining` (the profile's budget minus the spend Prometheus reports; left out when Prometheus cannot be read),
so the PDP can refuse training that would overrun the budget. `set_model_alias` supplies `target_is_gold`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from autooptimizer.tools.context import call_env
from autooptimizer.tools.registry import tool


class TrainRerankerArgs(BaseModel):
    dataset: str = Field(description="dataset hash")
    parent: str = Field("champion", description="alias or version to start from")
    trainer: Literal["ltr", "bi_encoder", "cross_encoder"] = "ltr"
    seed: int = 0
    max_steps: int = Field(200, ge=1, le=100000)
    time_budget_s: float = Field(900.0, gt=0, le=86400)


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


def _train_facts(args: TrainRerankerArgs) -> dict:
    from autooptimizer.profiles import load_profile

    cost = load_profile(call_env()).cost
    spent = _spent_so_far()
    return {"estimated_cost": round(args.time_budget_s * cost.price_per_compute_second, 6),
            "budget_remaining": None if spent is None else round(max(cost.budget - spent, 0.0), 6)}


def _spent_so_far() -> float | None:
    """Dollars spent so far, from Prometheus (sum of the service's cost counter); None when it cannot be read,
    so the fact is left out and the PDP does not see a made-up budget."""
    import httpx

    from autooptimizer.search.metric_names import COST_TOTAL
    from autooptimizer.settings import get_settings

    try:
        r = httpx.get(f"{get_settings().prometheus_url}/api/v1/query", params={"query": f"sum({COST_TOTAL})"},
                      timeout=1.0)
        r.raise_for_status()
        result = r.json()["data"]["result"]
        return float(result[0]["value"][1]) if result else 0.0
    except (httpx.HTTPError, KeyError, ValueError, IndexError):
        return None


def _alias_facts(args: SetModelAliasArgs) -> dict:
    from autooptimizer.search import aliases

    return {"target_is_gold": args.alias == "gold" or aliases.get_alias(aliases.GOLD) == args.version}


@tool(name="train_reranker", owner="ml", risk="change", facts=_train_facts)
def train_reranker(args: TrainRerankerArgs) -> dict:
    """Train a challenger on a dataset (ltr expert, bi-encoder or cross-encoder), log to MLflow, alias `challenger`."""
    from autooptimizer.ml.evaluate import resolve_model
    from autooptimizer.ml.train import TrainConfig, train

    cfg = TrainConfig(trainer=args.trainer, seed=args.seed, max_steps=args.max_steps, time_budget_s=args.time_budget_s)
    res = train(args.dataset, parent_version=resolve_model(args.parent).version, cfg=cfg)
    return {"version": res.version, "run_id": res.run_id, "trainer": res.trainer, "device": res.device,
            "wall_seconds": res.wall_seconds, "metrics": res.metrics}


@tool(name="evaluate_model", owner="ml", risk="read")
def evaluate_model(args: EvaluateModelArgs) -> dict:
    """nDCG@10, MRR@10 and Recall@100 of a model on a BEIR folder."""
    from autooptimizer.ml.evaluate import evaluate_spec, resolve_model
    from autooptimizer.settings import get_settings

    spec = resolve_model(args.model)
    qids = None
    if args.qids_file:
        from autooptimizer.ml.feedback import read_qids

        qids = set(read_qids(args.qids_file))
    result = evaluate_spec(spec, get_settings().dataset(args.data), split=args.split, qids=qids)
    return {**result.public(), "version": spec.version}


@tool(name="register_model", owner="ml", risk="change")
def register_model(args: RegisterModelArgs) -> dict:
    """Register a stored model version in the MLflow model registry (idempotent)."""
    from autooptimizer.ml import registry

    return registry.register_model(args.version).model_dump()


@tool(name="delete_model", owner="ml", risk="critical")
def delete_model(args: DeleteModelArgs) -> dict:
    """Delete a stored model version and its registry entry (refused while an alias or a child uses it)."""
    from autooptimizer.ml import registry

    return registry.delete_model(args.version)


@tool(name="set_model_alias", owner="ml", risk="critical", facts=_alias_facts)
def set_model_alias(args: SetModelAliasArgs) -> dict:
    """Point champion, challenger or gold at a stored version (aliases.json and the MLflow registry)."""
    from autooptimizer.ml import registry

    return registry.set_alias(args.alias, args.version).model_dump()
