"""The remedy rules' known answers, the gate names derived from the `Gate` literal, and the one delegation table both
planners read (the loop's `plan_for` and the chat's remediation chains and devops builders)."""

from __future__ import annotations

import pytest

from autooptimizer.agents.arguments import Facts, MissingInput, StepContext, build_args
from autooptimizer.agents.goal import read_goal
from autooptimizer.agents.playbooks import load_playbooks
from autooptimizer.errors import InputError
from autooptimizer.gates import GATE_NAMES
from autooptimizer.loop.cycle import plan_for, validate_gate
from autooptimizer.loop.remedies import (
    DELEGATIONS,
    GATE_PRIORITY,
    GATES,
    augment_size,
    cheaper_variant,
    delegations,
    next_replicas,
    smaller_rerank_depth,
)


def test_replicas_double_up_to_eight() -> None:
    seen = [1]
    for _ in range(4):
        seen.append(next_replicas(seen[-1]))
    assert seen == [1, 2, 4, 8, 8]
    assert [next_replicas(n) for n in (3, 5, 7, 12)] == [6, 8, 8, 12]  # never down from above the ceiling


def test_rerank_depth_halves_down_to_ten() -> None:
    seen: list[int | None] = [None]
    for _ in range(4):
        seen.append(smaller_rerank_depth(seen[-1]))
    assert seen == [None, 25, 12, 10, 10]
    assert [smaller_rerank_depth(d) for d in (100, 40, 21, 19)] == [50, 20, 10, 10]
    assert cheaper_variant(None) == {"rerank_depth": 25} and cheaper_variant(40) == {"rerank_depth": 20}


def test_augment_size_is_one_row_per_query_within_bounds() -> None:
    assert [augment_size(q) for q in (1, 7, 8, 10, 5000, 9000)] == [8, 8, 8, 10, 5000, 5000]


def test_gate_names_come_from_the_literal() -> None:
    assert GATE_PRIORITY == ("retries", "ndcg_drop", "p95_latency", "cost_budget")
    assert set(GATE_PRIORITY) == set(GATE_NAMES), "the gates Prometheus fires"
    assert (*GATE_PRIORITY, "deploy_watch") == GATES and set(DELEGATIONS) == set(GATES)
    assert [validate_gate(g) for g in GATES] == list(GATES) and validate_gate("") is None
    with pytest.raises(InputError) as err:
        validate_gate("latency")
    assert all(g in err.value.fix for g in GATES)


def test_both_planners_read_one_delegation_table() -> None:
    assert plan_for("p95_latency") == [{"agent": "devops", "tools": ["scale_service", "switch_variant"]}]
    assert plan_for("cost_budget") == [{"agent": "devops", "tools": ["switch_variant"]}]
    assert plan_for(None) == [] and delegations("nope") == ()
    pb = load_playbooks()
    for job in pb.jobs["metrics"]:
        assert job.gate is not None
        want = ["metrics"] + [f"{d.agent}:{d.job}" if d.job else d.agent for d in DELEGATIONS[job.gate]]
        assert pb.chains[job.name] == want
        assert [a.split(":")[0] for a in want[1:]] == [d["agent"] for d in plan_for(job.gate)]
    assert pb.chains == {"latency": ["metrics", "devops:scale"], "cost": ["metrics", "devops:switch"],
                         "check": ["metrics", "data", "ml", "devops"]}


def _ctx(goal: str, facts: Facts) -> StepContext:
    return StepContext(goal_text=goal, goal=read_goal(goal), env="dev", facts=facts)


def test_the_chat_sizes_remedies_as_the_loop_does() -> None:
    for replicas in (1, 2, 4, 5):
        assert build_args("scale_service", _ctx("scale up", Facts(replicas=replicas))) == {
            "replicas": next_replicas(replicas)}
    with pytest.raises(MissingInput) as exc:  # at the ceiling the loop switches variant; the chat asks
        build_args("scale_service", _ctx("scale up", Facts(replicas=8)))
    assert exc.value.field == "replicas" and "cheaper variant" in exc.value.hint
    for depth in (40, 25, 12):
        assert build_args("switch_variant", _ctx("cheaper", Facts(rerank_depth=depth))) == cheaper_variant(depth)


def test_latency_remedy_doubles_then_switches_then_is_exhausted() -> None:
    from autooptimizer.loop.remedies import Exhausted, Remedy, latency_remedy

    assert latency_remedy(4, None) == Remedy(tool="scale_service", args={"replicas": 8}, change="replicas 4 -> 8")
    assert latency_remedy(8, None) == Remedy(tool="switch_variant", args={"rerank_depth": 25},
                                             change="rerank depth 50 -> 25")
    assert latency_remedy(8, 12) == Remedy(tool="switch_variant", args={"rerank_depth": 10},
                                           change="rerank depth 12 -> 10")
    done = latency_remedy(8, 10)
    assert isinstance(done, Exhausted)
    assert done.reason == ("remedy exhausted: replicas at their maximum 8 and rerank depth already at its minimum 10")
    assert isinstance(latency_remedy(12, 5), Exhausted)  # beyond both bounds (an operator's values): still no-op


def test_cost_remedy_is_exhausted_at_the_minimum_depth() -> None:
    from autooptimizer.loop.remedies import Exhausted, Remedy, cost_remedy

    assert cost_remedy(20) == Remedy(tool="switch_variant", args={"rerank_depth": 10}, change="rerank depth 20 -> 10")
    assert cost_remedy(11) == Remedy(tool="switch_variant", args={"rerank_depth": 10}, change="rerank depth 11 -> 10")
    assert cost_remedy(10) == Exhausted(reason="remedy exhausted: rerank depth already at its minimum 10")
