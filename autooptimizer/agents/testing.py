"""Test doubles: a registry holding the 16 canonical tools as small deterministic functions over an in-memory
world, so the agent machinery (PDP, adapters, frameworks, approvals, tracing) is exercised without Prometheus,
training or deployments. Clearly fake: for tests and docs examples only; never registered globally.

`world.executed` lists every function that actually ran, which is how tests prove a denied call did not run.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

from autooptimizer.tools.registry import ToolRegistry, ToolSpec


@dataclass
class FakeWorld:
    executed: list[tuple[str, dict]] = field(default_factory=list)
    versions: list[str] = field(default_factory=lambda: ["1"])
    gold: set[str] = field(default_factory=lambda: {"1"})
    ab_passed: set[str] = field(default_factory=set)
    budget_remaining: float = 5.0
    price_per_step: float = 0.01
    gates_firing: list[str] = field(default_factory=lambda: ["ndcg_drop"])
    replicas: int = 1


class PromqlArgs(BaseModel):
    promql: str = Field(min_length=1, max_length=2000)


class EnvArgs(BaseModel):
    env: str | None = None


class DatasetArgs(BaseModel):
    dataset: str = "scifact"


class PathArgs(BaseModel):
    dataset_path: str


class TrainArgs(BaseModel):
    train_path: str
    steps: int = Field(100, ge=1, le=1_000_000)


class VersionArgs(BaseModel):
    model_version: str = Field(min_length=1, max_length=40)


class AliasArgs(BaseModel):
    model_version: str
    alias: str = "champion"


class CanaryArgs(BaseModel):
    model_version: str
    canary_weight: float = Field(ge=0, le=1)


class ScaleArgs(BaseModel):
    replicas: int = Field(ge=1, le=64)


class VariantArgs(BaseModel):
    variant: str = "small"


class EmptyArgs(BaseModel):
    pass


def demo_registry(world: FakeWorld | None = None) -> tuple[ToolRegistry, FakeWorld]:
    """A fresh registry with fake versions of every canonical tool, and the world they act on."""
    w = world or FakeWorld()
    reg = ToolRegistry()

    def add(name: str, owner: str, risk: str, model: type[BaseModel], fn, facts=None) -> None:  # noqa: ANN001
        def run(args: BaseModel) -> dict:
            w.executed.append((name, args.model_dump()))
            return fn(args)

        reg.register(ToolSpec(name=name, owner=owner, risk=risk, description=f"(test double) {name}",
                              args_model=model, func=run, facts=facts))

    gates = ("ndcg_drop", "p95_latency", "cost", "retries")
    add("query_metrics", "metrics", "read", PromqlArgs, lambda a: {"promql": a.promql, "ok": True, "value": 0.61})
    add("check_quality_gates", "metrics", "read", EnvArgs, lambda a: {
        "gates": [{"name": g, "status": "firing" if g in w.gates_firing else "ok"} for g in gates],
        "firing": list(w.gates_firing)})
    add("build_dataset", "data", "change", DatasetArgs,
        lambda a: {"dataset_path": f"/data/{a.dataset}/train.jsonl", "pairs": 120})
    add("explain_reranker", "data", "read", EmptyArgs, lambda a: {"top_tokens": ["protein", "cell"]})
    add("augment_dataset", "data", "change", PathArgs,
        lambda a: {"augmented_path": a.dataset_path.replace(".jsonl", ".aug.jsonl"), "added": 60})

    def train(a: TrainArgs) -> dict:
        v = str(len(w.versions) + 1)
        w.versions.append(v)
        return {"model_version": v, "train_path": a.train_path}

    add("train_reranker", "ml", "change", TrainArgs, train,
        facts=lambda a: {"estimated_cost": a.steps * w.price_per_step, "budget_remaining": w.budget_remaining})
    add("evaluate_model", "ml", "read", VersionArgs, lambda a: {"model_version": a.model_version, "ndcg10": 0.71})
    add("register_model", "ml", "change", VersionArgs, lambda a: {"registered_version": a.model_version})
    add("delete_model", "ml", "critical", VersionArgs, lambda a: {"deleted": a.model_version},
        facts=lambda a: {"target_is_gold": a.model_version in w.gold})
    add("set_model_alias", "ml", "critical", AliasArgs, lambda a: {"alias": a.alias, "version": a.model_version},
        facts=lambda a: {"target_is_gold": a.model_version in w.gold})

    def ab(a: VersionArgs) -> dict:
        w.ab_passed.add(a.model_version)
        return {"challenger_version": a.model_version, "ab_passed": True}

    add("start_ab_test", "devops", "change", VersionArgs, ab)
    add("deploy_canary", "devops", "change", CanaryArgs, lambda a: {"canary": a.model_version,
                                                                    "weight": a.canary_weight},
        facts=lambda a: {"canary_weight": a.canary_weight})
    add("promote_model", "devops", "critical", VersionArgs, lambda a: {"promoted": a.model_version},
        facts=lambda a: {"ab_passed": a.model_version in w.ab_passed})
    add("rollback_deployment", "devops", "critical", EmptyArgs, lambda a: {"rolled_back": True})

    def scale(a: ScaleArgs) -> dict:
        w.replicas = a.replicas
        return {"replicas": a.replicas}

    add("scale_service", "devops", "change", ScaleArgs, scale)
    add("switch_variant", "devops", "change", VariantArgs, lambda a: {"variant": a.variant})
    return reg, w


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run an ASGI app with uvicorn on 127.0.0.1 and a free port (bound to 0) in a thread; yields its base URL."""
    import socket

    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 10
    while not server.started and time.time() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
