"""What the supervisor delegates for each fired gate, and the rules that size each remedy: one table and one
function per rule, read by the loop's planner (`plan_for`, loop/cycle.py) and the chat planner
(agents/playbooks.py, agents/arguments.py) alike.

Rules (docs/loop.md):
- replicas: double, up to `MAX_REPLICAS` (1 -> 2 -> 4 -> 8 -> 8). The latency gate fires on p95 over 800 ms, which
  under load is mostly queueing: doubling halves each replica's share at once, where one more replica at 4 removes
  only a fifth of it, and a confirmed gate (5 readings) starts at most one cycle per streak;
- rerank depth: halve the deployed depth (`DEFAULT_RERANK_DEPTH` when none is named), never below
  `MIN_RERANK_DEPTH`; the cheaper variant (`switch_variant`'s arguments) is that depth;
- a remedy whose output equals the current state (replicas at `MAX_REPLICAS` and rerank depth at
  `MIN_RERANK_DEPTH` for latency; depth at its minimum for cost) is exhausted: `latency_remedy` / `cost_remedy` return
  `Exhausted`, the cycle commits nothing, ends `no_remedy` and escalates to a human by one alert
  (AutoOptRemedyExhausted) per exhausted streak, never re-applying the no-op;
- augmented rows: one per feedback query, at least `AUGMENT_MIN_ROWS`, at most `AUGMENT_MAX_ROWS` (the bound of
  `augment_dataset`'s args model).
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict

from autooptimizer.ml.pipeline import agent_tools

# A gate Prometheus can fire, in the supervisor's priority order (the first firing one picks the path).
FiredGate = Literal["retries", "ndcg_drop", "p95_latency", "cost_budget"]
# Every path a cycle can take: the fired gates, and an operator's check of the latest deploy.
Gate = Literal[FiredGate, "deploy_watch"]
GATES: tuple[Gate, ...] = get_args(Gate)
GATE_PRIORITY: tuple[FiredGate, ...] = get_args(FiredGate)

MAX_REPLICAS = 8
DEFAULT_RERANK_DEPTH = 50  # what the service reranks when the deployed state names no depth
MIN_RERANK_DEPTH = 10
AUGMENT_MIN_ROWS = 8
AUGMENT_MAX_ROWS = 5000


def next_replicas(current: int) -> int:
    """The latency remedy's replica count: double, up to MAX_REPLICAS; `current` itself once at the ceiling."""
    return current if current >= MAX_REPLICAS else min(MAX_REPLICAS, max(current, 1) * 2)


def smaller_rerank_depth(depth: int | None) -> int:
    """Half the deployed rerank depth (DEFAULT_RERANK_DEPTH when unset), at least MIN_RERANK_DEPTH."""
    return max(MIN_RERANK_DEPTH, (depth or DEFAULT_RERANK_DEPTH) // 2)


def cheaper_variant(depth: int | None) -> dict[str, int]:
    """`switch_variant`'s arguments for the faster, cheaper variant of a deployment reranking `depth` candidates."""
    return {"rerank_depth": smaller_rerank_depth(depth)}


def effective_depth(depth: int | None) -> int:
    """The depth the service reranks: the deployed one, DEFAULT_RERANK_DEPTH when none is named."""
    return depth or DEFAULT_RERANK_DEPTH


class Remedy(BaseModel):
    """One devops tool call that changes the deployed state: `tool` with `args`, and what it changes (`change`)."""

    model_config = ConfigDict(frozen=True)

    tool: Literal["scale_service", "switch_variant"]
    args: dict[str, int]
    change: str


class Exhausted(BaseModel):
    """No remedy left for the gate: applying its rule would change nothing. `reason` names the bound reached."""

    model_config = ConfigDict(frozen=True)

    reason: str


def _variant(depth: int | None, bound: str) -> Remedy | Exhausted:
    now = effective_depth(depth)
    new = smaller_rerank_depth(depth)
    if new >= now:
        return Exhausted(reason=f"remedy exhausted: {bound}rerank depth already at its minimum {MIN_RERANK_DEPTH}")
    return Remedy(tool="switch_variant", args={"rerank_depth": new}, change=f"rerank depth {now} -> {new}")


def latency_remedy(replicas: int, depth: int | None) -> Remedy | Exhausted:
    """p95_latency: double the replicas up to MAX_REPLICAS, then the cheaper variant; Exhausted at both bounds."""
    n = next_replicas(replicas)
    if n > replicas:
        return Remedy(tool="scale_service", args={"replicas": n}, change=f"replicas {replicas} -> {n}")
    return _variant(depth, f"replicas at their maximum {MAX_REPLICAS} and ")


def cost_remedy(depth: int | None) -> Remedy | Exhausted:
    """cost_budget: the cheaper variant; Exhausted once the rerank depth is at its minimum."""
    return _variant(depth, "")


def restored_variant(gates: dict[str, str] | None, deployed_depth: int | None, own_depth: int) -> Remedy | None:
    """ndcg_drop, before a retrain: the model's own rerank depth back when a cost or latency remedy cut it and both of
    those gates now read `ok` (unknown or firing keeps the cut: the pressure may still be there). None: nothing to
    give back. In the month soak the depth stayed at 10 for the last 25 minutes with both gates ok, and the cisi
    expert served 0.43 online instead of ~0.69, while each NDCG cycle could only find no new feedback."""
    if deployed_depth is None or deployed_depth >= own_depth:
        return None
    if (gates or {}).get("p95_latency") != "ok" or (gates or {}).get("cost_budget") != "ok":
        return None
    return Remedy(tool="switch_variant", args={"rerank_depth": own_depth},
                  change=f"rerank depth {deployed_depth} -> {own_depth} (the model's own: latency and cost gates ok)")


def augment_size(queries: int) -> int:
    """Augmented rows for a dataset of `queries` feedback queries: one each, within [AUGMENT_MIN_ROWS,
    AUGMENT_MAX_ROWS]."""
    return min(AUGMENT_MAX_ROWS, max(AUGMENT_MIN_ROWS, queries))


class Delegation(BaseModel):
    """One specialist's share of a remedy: its tools, in order, and the playbook job the chat runs for it (None =
    the agent's default job)."""

    model_config = ConfigDict(frozen=True)

    agent: str
    tools: tuple[str, ...]
    job: str | None = None


RETRAIN_RELEASE = ("deploy_canary", "start_ab_test", "promote_model", "rollback_deployment")

# The supervisor's delegation per gate, in order. ndcg_drop's data and ML tools are the retrain pipeline's
# (ml/pipeline.py), so a step added there is delegated here too.
DELEGATIONS: dict[str, tuple[Delegation, ...]] = {  # keyed by every Gate (tests/test_loop_remedies.py)
    "retries": (Delegation(agent="metrics", tools=("query_metrics",)),
                Delegation(agent="devops", tools=("rollback_deployment",))),
    "ndcg_drop": (Delegation(agent="data", tools=agent_tools("data")), Delegation(agent="ml", tools=agent_tools("ml")),
                  Delegation(agent="devops", tools=RETRAIN_RELEASE)),
    "p95_latency": (Delegation(agent="devops", tools=("scale_service", "switch_variant"), job="scale"),),
    "cost_budget": (Delegation(agent="devops", tools=("switch_variant",), job="switch"),),
    "deploy_watch": (Delegation(agent="devops", tools=("rollback_deployment",)),),
}


def delegations(gate: str | None) -> tuple[Delegation, ...]:
    """The supervisor's delegation for `gate`, in order; () for no gate."""
    return DELEGATIONS.get(gate or "", ())


__all__ = ["AUGMENT_MAX_ROWS", "AUGMENT_MIN_ROWS", "DEFAULT_RERANK_DEPTH", "DELEGATIONS", "GATES", "GATE_PRIORITY",
           "MAX_REPLICAS", "MIN_RERANK_DEPTH", "Delegation", "Exhausted", "FiredGate", "Gate", "Remedy",
           "augment_size", "cheaper_variant", "cost_remedy", "delegations", "effective_depth", "latency_remedy",
           "next_replicas", "smaller_rerank_depth"]
