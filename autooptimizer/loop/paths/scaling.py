"""p95_latency and cost_budget: the devops remedies, sized by loop/remedies.py (the chat's devops jobs use the same
rules). Latency: double the replicas up to MAX_REPLICAS, then the cheaper variant; cost: the cheaper variant.
A remedy that would change nothing (`Exhausted`: both bounds reached) commits nothing: the cycle ends `no_remedy`
and escalates to a human with one AutoOptRemedyExhausted alert per run of such cycles (not one per cycle)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from autooptimizer.loop.alerts import raise_alert
from autooptimizer.loop.artifacts import write_helm_patch
from autooptimizer.loop.cycle_types import CycleOptions, CycleState
from autooptimizer.loop.remedies import Exhausted, Remedy, cost_remedy, latency_remedy, restored_variant

if TYPE_CHECKING:
    from autooptimizer.loop.cycle import CycleRunner

OUTCOMES = {"scale_service": "scaled", "switch_variant": "variant_switched"}


def latency_path(runner: CycleRunner, cid: str, opts: CycleOptions, state: CycleState) -> tuple[str, str]:
    current, _ = runner.release.current()
    return _apply(runner, cid, state, latency_remedy(current.replicas, current.rerank_depth), "p95_latency")


def cost_path(runner: CycleRunner, cid: str, opts: CycleOptions, state: CycleState) -> tuple[str, str]:
    current, _ = runner.release.current()
    return _apply(runner, cid, state, cost_remedy(current.rerank_depth), "cost_budget")


def restore_variant(runner: CycleRunner, cid: str, state: CycleState) -> tuple[str, str] | None:
    """ndcg_drop's first remedy: the rerank depth a cost or latency remedy took, given back once both gates read ok
    (`remedies.restored_variant`); None when there is nothing to give back, and the path retrains."""
    from autooptimizer.search import model_store

    current, _ = runner.release.current()
    remedy = restored_variant(state.gates, current.rerank_depth, model_store.load(current.model_version).rerank_depth)
    if remedy is None:
        return None
    return _run(runner, cid, state, remedy, "restore_variant")


def _apply(runner: CycleRunner, cid: str, state: CycleState, remedy: Remedy | Exhausted,
           gate: str) -> tuple[str, str]:
    if isinstance(remedy, Exhausted):
        escalate(runner, cid, gate, remedy.reason)
        return "no_remedy", remedy.reason
    return _run(runner, cid, state, remedy, "scale" if remedy.tool == "scale_service" else "switch_variant")


def _run(runner: CycleRunner, cid: str, state: CycleState, remedy: Remedy, step: str) -> tuple[str, str]:
    """Call the remedy's tool as journal step `step`; once applied it is final (`_applied`)."""
    res = runner.step(cid, step, lambda: runner.tool(state, "devops", remedy.tool, dict(remedy.args)))
    _applied(runner, cid, state, res)
    return OUTCOMES[remedy.tool], remedy.change


def escalate(runner: CycleRunner, cid: str, gate: str, reason: str) -> bool:
    """Alert a human that `gate`'s remedy is exhausted, unless the previous cycle of that gate already ended
    `no_remedy` (it alerted then). Returns whether an alert was raised."""
    previous = next((r for r in runner.journal.list(50) if r.id != cid and r.gate == gate and r.status != "running"),
                    None)
    if previous is not None and previous.outcome == "no_remedy":
        return False
    raise_alert(runner.settings, "AutoOptRemedyExhausted", f"{gate}: {reason}; a human must act (more capacity, "
                "another model)", labels={"cycle_id": cid, "gate": gate})
    return True


def _applied(runner: CycleRunner, cid: str, state: CycleState, res: dict[str, Any]) -> None:
    """A remedy is final once applied: nothing to restore, helm_patch.yaml records it."""
    runner.journal.mark_clean(cid)
    write_helm_patch(runner.artifacts_dir(cid), runner.release)
    state.action = res
