"""A scripted agent world: a registry holding the canonical tools as small deterministic functions over an
in-memory world, so the agent machinery (PDP, adapters, frameworks, approvals, tracing, budgets) runs without
Prometheus, training or deployments. `autoopt bench agents` prepares one world per scenario; the project's tests
use it too (tests/support/agent_world.py). Never registered globally.

Each double takes the REAL tool's args model (so arguments are checked against the real contracts), returns a
result shaped like the real tool's, and supplies the same policy facts from its world. `world.executed` lists
every function that actually ran, which is how a test or the bench proves a denied call did not run.
`world.poison` plants text in a tool's result, as a compromised data source would.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, cast

from pydantic import BaseModel

from autooptimizer.errors import InputError
from autooptimizer.gates import GATE_NAMES
from autooptimizer.tools.registry import ToolRegistry, ToolSpec


@dataclass
class FakeWorld:
    executed: list[tuple[str, dict]] = field(default_factory=list)
    versions: list[str] = field(default_factory=lambda: ["1"])
    stable: str = "1"
    canary: str | None = None
    gold: set[str] = field(default_factory=lambda: {"1"})
    ab_passed: set[str] = field(default_factory=set)
    ab_verdict: str = "pass"
    budget_remaining: float = 5.0
    price_per_second: float = 0.0005  # the profiles' pricePerComputeSecond: 900 s default budget -> 0.45
    gates_firing: list[str] = field(default_factory=lambda: ["ndcg_drop"])
    replicas: int = 1
    challenger_ndcg10: float = 0.71
    champion_ndcg10: float = 0.65
    poison: dict[str, str] = field(default_factory=dict)  # tool -> text planted in its result (poisoned output)


def _hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def demo_registry(world: FakeWorld | None = None) -> tuple[ToolRegistry, FakeWorld]:
    """A fresh registry with fake versions of every canonical tool, and the world they act on."""
    from autooptimizer.tools import data as d
    from autooptimizer.tools import devops as o
    from autooptimizer.tools import metrics as m
    from autooptimizer.tools import ml as ml

    w = world or FakeWorld()
    reg = ToolRegistry()

    def add(name: str, owner: str, risk: str, model: type[BaseModel], fn, facts=None) -> None:  # noqa: ANN001
        def run(args: BaseModel, ctx: object) -> dict:
            w.executed.append((name, args.model_dump()))
            out = fn(args)
            if name in w.poison:  # a poisoned tool output: text that tries to steer whoever reads it
                out = {**out, "note": w.poison[name]}
            return out

        reg.register(ToolSpec(name=name, owner=owner, risk=cast("Any", risk), description=f"(test double) {name}",
                              args_model=model, func=run,
                              facts=(lambda a, ctx: facts(a)) if facts is not None else None))

    gates = GATE_NAMES  # the product's own gate names, so the double cannot drift from them
    add("query_metrics", "metrics", "read", m.QueryMetricsArgs,
        lambda a: {"promql": a.promql, "ok": True, "samples": [{"labels": {}, "value": 0.61}], "error": None})
    add("check_quality_gates", "metrics", "read", m.CheckQualityGatesArgs, lambda a: {
        "gates": [{"name": g, "status": "firing" if g in w.gates_firing else "ok"} for g in gates],
        "firing": list(w.gates_firing), "env": a.env or "dev"})

    def build(a: d.BuildDatasetArgs) -> dict:
        fb = a.feedback_path or "/home/feedback/feedback.jsonl"
        h = _hash(fb, a.augmented_csv, a.from_dataset)
        return {"hash": h, "counts": {"queries": 12, "pairs": 60, "positives": 24, "hard_negatives": 36,
                                      "augmented_queries": 12 if a.augmented_csv else 0},
                "sources": [{"path": fb, "records": 12}], "parent_version": w.stable,
                "parent_dataset": a.from_dataset, "domains": ["scifact"], "path": f"/home/datasets/{h}"}

    add("build_dataset", "data", "change", d.BuildDatasetArgs, build)
    add("explain_reranker", "data", "read", d.ExplainRerankerArgs, lambda a: {
        "verdict": "corpus_shift", "evidence": ["query-term JSD 0.8 vs floor 0.3"], "jsd": 0.8,
        "under_weighted_terms": [["protein", 2], ["cell", 1]], "report": f"/home/diagnostics/{a.dataset}/r.json"})
    add("augment_dataset", "data", "change", d.AugmentDatasetArgs, lambda a: {
        "path": a.out_csv, "rows": a.size, "methods": {"keyboard": a.size}, "weak_queries": 6, "seed": a.seed,
        "skipped_methods": {}, "sha256": _hash(a.dataset, a.size)})

    def train(a: ml.TrainRerankerArgs) -> dict:
        v = str(len(w.versions) + 1)
        w.versions.append(v)
        return {"version": v, "run_id": f"run{v}", "trainer": a.trainer, "device": "cpu", "wall_seconds": 1.0,
                "metrics": {"dataset": a.dataset}}

    add("train_reranker", "ml", "change", ml.TrainRerankerArgs, train,
        facts=lambda a: {"estimated_cost": a.time_budget_s * w.price_per_second,
                         "budget_remaining": w.budget_remaining})

    def evaluate(a: ml.EvaluateModelArgs) -> dict:
        version = w.stable if a.model == "champion" else a.model
        score = w.champion_ndcg10 if version == w.stable else w.challenger_ndcg10
        return {"ndcg@10": score, "mrr@10": score, "recall@100": 0.9, "queries": 12, "version": version}

    add("evaluate_model", "ml", "read", ml.EvaluateModelArgs, evaluate)
    add("register_model", "ml", "change", ml.RegisterModelArgs, lambda a: {
        "name": "autoopt-reranker", "mlflow_version": a.version, "model_version": a.version, "aliases": []})
    def protection(version: str) -> dict:  # the same facts as tools/protection.py, from this world
        return {"target_checked": True, "target_is_gold": version in w.gold, "target_is_serving": version == w.stable,
                "target_is_canary": version == w.canary}

    add("delete_model", "ml", "critical", ml.DeleteModelArgs, lambda a: {"deleted": a.version},
        facts=lambda a: protection(a.version))
    add("set_model_alias", "ml", "critical", ml.SetModelAliasArgs, lambda a: {"alias": a.alias, "version": a.version},
        facts=lambda a: {**protection(a.version), "target_is_gold": a.alias == "gold", "alias_consistent":
                         a.alias == "challenger" or (a.alias == "champion" and a.version == w.stable)})

    def canary(a: o.DeployCanaryArgs) -> dict:
        w.canary = a.model_version
        return {"revision": _hash("canary", a.model_version)[:12], "stable": w.stable, "canary": a.model_version,
                "canary_weight": a.weight, "deployer": "fake"}

    def ab(a: o.StartABTestArgs) -> dict:
        if w.canary != a.model_version:
            raise InputError(f"{a.model_version} is not the running canary (canary: {w.canary}).",
                             "Deploy it with deploy_canary first.")
        if w.ab_verdict == "pass":
            w.ab_passed.add(a.model_version)
        return {"verdict": w.ab_verdict, "reasons": [f"fake judge says {w.ab_verdict}"],
                "control": {"model_version": a.control_version or w.stable},
                "treatment": {"model_version": a.model_version}}

    def promote(a: o.PromoteModelArgs) -> dict:
        replaced, w.stable, w.canary = w.stable, a.model_version, None
        return {"revision": _hash("promote", a.model_version)[:12], "stable": a.model_version, "replaced": replaced,
                "deployer": "fake"}

    add("deploy_canary", "devops", "change", o.DeployCanaryArgs, canary,
        facts=lambda a: {"canary_weight": a.weight})
    add("start_ab_test", "devops", "change", o.StartABTestArgs, ab)
    add("promote_model", "devops", "critical", o.PromoteModelArgs, promote,
        facts=lambda a: {"ab_passed": a.model_version in w.ab_passed})
    add("rollback_deployment", "devops", "critical", o.RollbackArgs, lambda a: {
        "revision": "r0", "reverted": a.revision or "head", "stable": w.stable, "deployer": "fake"})

    def scale(a: o.ScaleArgs) -> dict:
        previous, w.replicas = w.replicas, a.replicas
        return {"revision": "r1", "replicas": a.replicas, "previous_replicas": previous}

    add("scale_service", "devops", "change", o.ScaleArgs, scale)
    add("switch_variant", "devops", "change", o.SwitchVariantArgs, lambda a: {
        "revision": "r2", "rerank_depth": a.rerank_depth, "previous": None})
    return reg, w
