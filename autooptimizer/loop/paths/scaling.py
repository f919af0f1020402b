"""p95_latency and cost_budget: the devops remedies, sized by loop/remedies.py (the chat's devops jobs use the same
rules). Latency: double the replicas up to MAX_REPLICAS, then the cheaper variant; cost: the cheaper variant."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from autooptimizer.loop.artifacts import write_helm_patch
from autooptimizer.loop.cycle_types import CycleOptions, CycleState
from autooptimizer.loop.remedies import MAX_REPLICAS, cheaper_variant, next_replicas

if TYPE_CHECKING:
    from autooptimizer.loop.cycle import CycleRunner


def latency_path(runner: CycleRunner, cid: str, opts: CycleOptions, state: CycleState) -> tuple[str, str]:
    current, _ = runner.release.current()
    n = next_replicas(current.replicas)
    if n > current.replicas:
        res = runner.step(cid, "scale", lambda: runner.tool(state, "devops", "scale_service", {"replicas": n}))
        outcome, reason = "scaled", f"replicas {current.replicas} -> {n}"
    else:
        variant = cheaper_variant(current.rerank_depth)
        res = runner.step(cid, "switch_variant", lambda: runner.tool(state, "devops", "switch_variant", variant))
        outcome, reason = "variant_switched", f"at {MAX_REPLICAS} replicas; rerank depth -> {variant['rerank_depth']}"
    _applied(runner, cid, state, res)
    return outcome, reason


def cost_path(runner: CycleRunner, cid: str, opts: CycleOptions, state: CycleState) -> tuple[str, str]:
    current, _ = runner.release.current()
    variant = cheaper_variant(current.rerank_depth)
    res = runner.step(cid, "switch_variant", lambda: runner.tool(state, "devops", "switch_variant", variant))
    _applied(runner, cid, state, res)
    return "variant_switched", (f"cheaper variant: rerank depth {current.rerank_depth or 'default'} -> "
                                f"{variant['rerank_depth']}")


def _applied(runner: CycleRunner, cid: str, state: CycleState, res: dict[str, Any]) -> None:
    """A remedy is final once applied: nothing to restore, helm_patch.yaml records it."""
    runner.journal.mark_clean(cid)
    write_helm_patch(runner.artifacts_dir(cid), runner.release)
    state.action = res
