"""The playbook steps' argument builders match the REAL tools: every step has a builder, every builder's output
validates against the real tool's args model, and a value nobody gave is asked for, never invented."""

from __future__ import annotations

import pytest

from autooptimizer.agents.arguments import (
    BUILDERS,
    CONDITIONS,
    Facts,
    MissingInput,
    StepContext,
    build_args,
    condition,
    learn,
)
from autooptimizer.agents.goal import read_goal
from autooptimizer.agents.playbooks import load_playbooks
from autooptimizer.tools import load_all_tools

FULL = Facts(base_dataset="12dbe98e7afe6e50", dataset="9a649133e2333cc5", dataset_queries=10, domain="cran",
             feedback_path="/home/feedback/feedback.jsonl", augmented_csv="/home/augment/x/augmented_dataset.csv",
             model_version="ltr-8eef9ab271", ab_verdict="pass", replicas=2, rerank_depth=40)


def _ctx(goal: str = "NDCG dropped, fix the reranker", facts: Facts | None = None, env: str = "dev") -> StepContext:
    return StepContext(goal_text=goal, goal=read_goal(goal), env=env, facts=facts or Facts())


def test_every_playbook_step_has_a_builder_for_a_real_tool_its_agent_owns():
    pb, reg = load_playbooks(), load_all_tools()
    assert pb.step_names() <= set(BUILDERS) and pb.conditions() <= set(CONDITIONS)
    for agent, jobs in pb.jobs.items():
        for job in jobs:
            for step in job.steps:
                assert reg.get(step.tool).owner == agent, (agent, job.name, step.name)


@pytest.mark.parametrize("step", sorted(load_playbooks().step_names()))
def test_builder_output_validates_against_the_real_args_model(step):
    pb, reg = load_playbooks(), load_all_tools()
    tool = next(s.tool for jobs in pb.jobs.values() for j in jobs for s in j.steps if s.name == step)
    model = reg.get(tool).args_model
    goal = "set the champion alias to version 7 and delete version 7"
    args = build_args(step, _ctx(goal, FULL))
    assert set(args) <= set(model.model_fields), f"{step} builds fields {set(args) - set(model.model_fields)}"
    model.model_validate(args)


def test_values_flow_from_earlier_results_before_the_goal():
    ctx = _ctx("NDCG of version 5 dropped, fix the reranker", FULL)
    assert build_args("train_reranker", ctx) == {"dataset": "9a649133e2333cc5"}
    assert build_args("evaluate_model", ctx) == {"model": "ltr-8eef9ab271", "data": "cran"}
    assert build_args("evaluate_champion", ctx) == {"model": "champion", "data": "cran"}
    assert build_args("deploy_canary", ctx) == {"model_version": "ltr-8eef9ab271", "weight": 0.5}
    assert build_args("build_augmented_dataset", ctx) == {
        "feedback_path": "/home/feedback/feedback.jsonl", "augmented_csv": "/home/augment/x/augmented_dataset.csv",
        "from_dataset": "12dbe98e7afe6e50"}
    aug = build_args("augment_dataset", ctx)
    assert (aug["dataset"], aug["size"]) == ("12dbe98e7afe6e50", 10)
    assert aug["out_csv"].endswith("/augment/12dbe98e7afe6e50/augmented_dataset.csv")


def test_goal_values_and_profile_defaults():
    goal = "train a cross-encoder on dataset 0123456789abcdef for 50 steps within 2 minutes"
    assert build_args("train_reranker", _ctx(goal)) == {"dataset": "0123456789abcdef", "trainer": "cross_encoder",
                                                        "max_steps": 50, "time_budget_s": 120.0}
    assert build_args("deploy_canary", _ctx("canary version 3 at 20%")) == {"model_version": "3", "weight": 0.2}
    assert build_args("deploy_canary", _ctx("canary version 3", env="prod"))["weight"] == 0.2  # prod profile
    assert build_args("explain_reranker", _ctx("explain dataset 0123456789abcdef with lime")) == {
        "dataset": "0123456789abcdef", "explainer": "lime"}
    assert build_args("build_dataset", _ctx("build a dataset from /logs/feedback.jsonl")) == {
        "feedback_path": "/logs/feedback.jsonl"}
    assert build_args("scale_service", _ctx("scale to 4 replicas")) == {"replicas": 4}
    # the latency remedy doubles the replicas, as the loop does (loop/remedies.py: one rule for both planners)
    assert build_args("scale_service", _ctx("scale up", Facts(replicas=2))) == {"replicas": 4}
    assert build_args("switch_variant", _ctx("switch to a cheaper variant")) == {"rerank_depth": 25}
    assert build_args("switch_variant", _ctx("cheaper, rerank depth 30")) == {"rerank_depth": 30}
    rb = build_args("rollback_deployment", _ctx("roll back revision 0a1b2c3d"))
    assert rb["revision"] == "0a1b2c3d" and rb["reason"].startswith("requested by the operator's goal")


@pytest.mark.parametrize(("step", "goal", "field"), [
    ("train_reranker", "retrain the reranker", "dataset"),
    ("train_reranker", "retrain on /logs/feedback.jsonl", "dataset"),  # a feedback log is not a dataset
    ("explain_reranker", "why is this ranked first?", "dataset"),
    ("build_augmented_dataset", "augment it", "augmented_csv"),
    ("evaluate_model", "evaluate version 3", "data"),
    ("deploy_canary", "deploy a canary", "model_version"),
    ("promote_model", "promote it", "model_version"),
    ("set_model_alias", "move the alias to version 3", "alias"),
    ("scale_service", "scale up", "replicas"),  # no count in the goal, nothing deployed to read it from
])
def test_a_value_nobody_gave_is_asked_for(step, goal, field):
    with pytest.raises(MissingInput) as exc:
        build_args(step, _ctx(goal))
    assert exc.value.field == field


def test_learners_read_the_real_result_shapes():
    gates = {"gates": [{"name": "ndcg_drop", "status": "firing"}, {"name": "p95_latency", "status": "unknown"}],
             "firing": ["ndcg_drop"], "env": "dev"}
    assert learn("check_quality_gates", gates) == {"gates": {"ndcg_drop": "firing", "p95_latency": "unknown"},
                                                   "gates_firing": ["ndcg_drop"], "gates_all_ok": False}
    built = {"hash": "12dbe98e7afe6e50", "counts": {"queries": 10}, "domains": ["cran"],
             "sources": [{"path": "/fb.jsonl"}], "path": "/home/datasets/12dbe98e7afe6e50"}
    assert learn("build_dataset", built) == {"base_dataset": "12dbe98e7afe6e50", "dataset": "12dbe98e7afe6e50",
                                             "feedback_path": "/fb.jsonl", "dataset_queries": 10, "domain": "cran"}
    assert learn("build_augmented_dataset", {**built, "hash": "9a649133e2333cc5"}) == {"dataset": "9a649133e2333cc5"}
    assert learn("train_reranker", {"version": "ltr-1", "run_id": "r"}) == {"model_version": "ltr-1",
                                                                            "mlflow_run_id": "r"}
    assert learn("evaluate_champion", {"ndcg@10": 0.8}) == {"champion_ndcg10": 0.8}
    assert learn("query_metrics", {"ok": False, "samples": [], "error": "Prometheus unreachable"}) == {
        "metric_error": "Prometheus unreachable"}
    assert learn("train_reranker", "not a dict") == {}


def test_conditions():
    assert condition("no_dataset", _ctx("explain it")) is True
    assert condition("no_dataset", _ctx("explain dataset 0123456789abcdef")) is False
    assert condition("ab_passed", _ctx(facts=Facts(ab_verdict="pass"))) is True
    assert condition("ab_passed", _ctx(facts=Facts(ab_verdict="inconclusive"))) is False


def test_scale_and_switch_read_the_deployed_state_from_gitops():
    from autooptimizer.loop.gitops import GitOpsRepo, HelmPatch
    from autooptimizer.settings import get_settings

    GitOpsRepo(get_settings(), "dev").commit_patch(HelmPatch(model_version="v1", replicas=2, rerank_depth=40),
                                                   "test state")
    # doubled, as the loop scales (loop/remedies.py: one rule for both planners)
    assert build_args("scale_service", _ctx("latency is high, scale up")) == {"replicas": 4}
    assert build_args("switch_variant", _ctx("cost too high, switch to a cheaper variant")) == {"rerank_depth": 20}


def test_facts_from_a_report_drop_values_of_the_wrong_type():
    facts = Facts.lenient({"replicas": "two", "model_version": "ltr-1", "unknown": 1, "gates_all_ok": True})
    assert facts.public() == {"model_version": "ltr-1", "gates_all_ok": True}
