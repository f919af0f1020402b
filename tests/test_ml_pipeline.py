"""The retrain pipeline (ml/pipeline.py) is the one list of steps every path runs: the loop journals its step names,
`autoopt repair` reports them, the chat's data and ML jobs are its calls and the supervisor delegates its tools; and
each call's arguments come from what the earlier calls read."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from autooptimizer.ml import pipeline
from autooptimizer.ml.pipeline import PIPELINE, STEP_NAMES, Call, MissingInput, PipelineState, Step

DOCS = Path(__file__).resolve().parents[1] / "docs" / "loop.md"


def test_the_steps_and_their_agents_tools_and_artifacts() -> None:
    assert STEP_NAMES == ("split", "feedback", "dataset", "diagnose", "augment", "dataset_final", "train",
                          "register", "evaluate")
    assert [(s.agent, s.tool) for s in PIPELINE] == [
        ("data", None), ("data", None), ("data", "build_dataset"), ("data", "explain_reranker"),
        ("data", "augment_dataset"), ("data", "build_dataset"), ("ml", "train_reranker"), ("ml", "register_model"),
        ("ml", "evaluate_model")]
    assert [s.artifact for s in PIPELINE] == [
        "split.json", "feedback.jsonl", "base.dataset_manifest.yaml", "diagnostic_report.json",
        "augmented_dataset.csv", "dataset_manifest.yaml", "mlflow_run_id.txt", None, "evaluation.json"]


def test_every_path_reads_the_one_step_list() -> None:
    from autooptimizer.agents.playbooks import load_playbooks
    from autooptimizer.loop.cycle import plan_for
    from autooptimizer.ml.repair import STEPS

    assert STEPS == STEP_NAMES  # repair's report steps
    pb = load_playbooks()
    for agent, job in (("data", "prepare"), ("ml", "retrain")):  # the chat's jobs: the pipeline's calls
        steps = pb.job(agent, "", job).steps
        assert [(s.name, s.tool) for s in steps] == [(c.name, s.tool) for s, c in pipeline.agent_steps(agent)]
    assert [s.tool for s in pb.job("ml", "", "retrain").steps] == [
        "train_reranker", "register_model", "evaluate_model", "evaluate_model"]
    assert [s.name for s in pb.job("data", "", "prepare").steps] == [
        "build_dataset", "explain_reranker", "augment_dataset", "build_augmented_dataset"]
    assert [s.optional for s in pb.job("data", "", "prepare").steps] == [False, True, False, False]
    delegated = {d["agent"]: d["tools"] for d in plan_for("ndcg_drop")}  # the supervisor's delegation
    assert delegated["data"] == ["build_dataset", "explain_reranker", "augment_dataset"]
    assert delegated["ml"] == list(pipeline.agent_tools("ml")) == ["train_reranker", "register_model",
                                                                   "evaluate_model"]


def test_the_docs_table_lists_the_pipeline_steps_in_order() -> None:
    text = DOCS.read_text()
    section = text[text.index("### The retrain steps"):text.index("The domain is `--domain-data`")]
    assert tuple(re.findall(r"^\| `(\w+)` \|", section, re.M)) == STEP_NAMES


class FakeTools:
    """Results shaped like the real tools', computed from the arguments; records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def __call__(self, step: Step, call: Call, args: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((step.name, call.name, args))
        tool = call.tool or step.tool
        if tool == "build_dataset":
            h = "f" * 16 if args.get("augmented_csv") else "b" * 16
            return {"hash": h, "counts": {"queries": 12}, "sources": [{"path": args.get("feedback_path")}],
                    "domains": ["dom"], "path": f"/datasets/{h}"}
        if tool == "explain_reranker":
            return {"verdict": "corpus_shift", "jsd": 0.8, "under_weighted_terms": [["x", 1]], "report": "r"}
        if tool == "augment_dataset":
            return {"path": args["out_csv"], "rows": args["size"], "methods": {"keyboard": args["size"]},
                    "weak_queries": 6, "seed": args.get("seed", 0)}
        if tool == "train_reranker":
            return {"version": "ltr-new", "run_id": "run1"}
        if tool == "register_model":
            return {"name": "autoopt-reranker", "mlflow_version": "3"}
        if tool == "measure_serving_cost":
            return {"domains": [], "ratio": 1.05}
        score = {"ltr-new": 0.7}.get(args["model"], 0.5) if args.get("split") is None else 0.6
        return {"ndcg@10": score, "mrr@10": score, "recall@100": 0.9, "queries": 10, "version": args["model"]}


def _run(state: PipelineState, skip: tuple[str, ...] = ()) -> tuple[FakeTools, list[str]]:
    tools, ran = FakeTools(), []

    def run_step(step: Step, work: Any, inputs: dict[str, Any] | None) -> dict[str, Any]:
        ran.append(step.name)
        return work()

    pipeline.run(state, call_tool=tools, run_step=run_step, skip=("split", "feedback", *skip))
    return tools, ran


def test_each_call_reads_what_earlier_calls_learned(autoopt_home: Path) -> None:
    state = PipelineState(env="dev", domain="dom", original="scifact", seed=3, champion="v1",
                          feedback_path="/fb.jsonl", trainer="ltr", time_budget_s=600.0)
    tools, ran = _run(state)
    assert ran == list(STEP_NAMES[2:])
    args = {name: a for _s, name, a in tools.calls}
    assert args["build_dataset"] == {"feedback_path": "/fb.jsonl", "parent_version": "v1"}
    assert args["explain_reranker"] == {"dataset": "b" * 16, "model": "v1", "reference_data": "scifact"}
    assert args["augment_dataset"] == {"dataset": "b" * 16, "size": 12, "seed": 3, "out_csv": str(
        autoopt_home / "augment" / ("b" * 16) / "augmented_dataset.csv")}
    assert args["build_augmented_dataset"] == {
        "feedback_path": "/fb.jsonl", "parent_version": "v1", "augmented_csv": args["augment_dataset"]["out_csv"],
        "from_dataset": "b" * 16, "augmentation": {"methods": {"keyboard": 12}, "rows": 12, "seed": 3,
                                                   "weak_queries": 6}}
    assert args["train_reranker"] == {"dataset": "f" * 16, "parent": "v1", "trainer": "ltr", "seed": 3,
                                      "time_budget_s": 600.0, "original": "scifact"}
    assert args["register_model"] == {"version": "ltr-new"}
    evaluated = [(a["model"], a["data"], a.get("split")) for s, _n, a in tools.calls
                 if s == "evaluate" and "model" in a]
    assert evaluated == [("ltr-new", "dom", None), ("v1", "dom", None), ("ltr-new", "scifact", "test"),
                         ("v1", "scifact", "test")]
    assert (state.challenger, state.mlflow_run_id, state.registered_version) == ("ltr-new", "run1", "3")
    assert (state.challenger_ndcg10, state.champion_ndcg10, state.verdict) == (0.7, 0.5, "corpus_shift")
    ev = state.evaluation or {}
    assert ev["challenger"]["new_domain_ndcg@10"] == 0.7 and ev["champion"]["original_ndcg@10"] == 0.6
    assert ev["promotable"] is True, ev["reasons"]  # +0.2 on the new domain, no original-domain drop


def test_skipping_augment_skips_the_final_dataset_and_trains_on_the_base_one(autoopt_home: Path) -> None:
    state = PipelineState(domain="dom", original="scifact", champion="v1", feedback_path="/fb.jsonl")
    tools, ran = _run(state, skip=("diagnose", "augment"))
    assert ran == ["dataset", "train", "register", "evaluate"]
    assert next(a for _s, n, a in tools.calls if n == "train_reranker")["dataset"] == "b" * 16


def test_a_value_no_earlier_step_gave_is_missing_not_invented() -> None:
    calls = pipeline.calls()
    with pytest.raises(MissingInput) as exc:
        calls["train_reranker"][1].args(PipelineState())
    assert exc.value.field == "dataset"
    with pytest.raises(MissingInput) as exc:
        calls["build_augmented_dataset"][1].args(PipelineState(base_dataset="b" * 16))
    assert exc.value.field == "augmented_csv"
    assert calls["evaluate_champion"][1].args(PipelineState(domain="dom")) == {"model": "champion", "data": "dom"}


def test_reads_follow_result_paths() -> None:
    assert pipeline.pick({"sources": [{"path": "/a"}], "counts": {"queries": 3}}, "sources.0.path") == "/a"
    assert pipeline.pick({"counts": {"queries": 3}}, "counts.queries") == 3
    assert pipeline.pick({"sources": []}, "sources.0.path") is None
    dataset = pipeline.step("dataset").calls[0]
    assert dataset.read({"hash": "h", "domains": ["a", "b"], "counts": {}, "sources": []}) == {
        "base_dataset": "h", "dataset": "h", "feedback_path": None, "dataset_queries": None, "domain": None}


def test_serving_cost_never_names_the_original_domain_twice(autoopt_home: Path) -> None:
    def cost_args(domain: str) -> list[str]:
        state = PipelineState(env="dev", domain=domain, original="scifact", seed=3, champion="v1",
                              challenger="ltr-new", feedback_path="/fb.jsonl", trainer="ltr", time_budget_s=600.0)
        return pipeline._cost_args(state)["data"]  # pyright: ignore[reportPrivateUsage]

    assert cost_args("dom") == ["dom", "scifact:test"]
    assert cost_args("scifact") == ["scifact"]  # a repair of the original domain: its held-out half, once


def test_measure_serving_cost_refuses_duplicate_names_before_loading_anything(
        autoopt_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from autooptimizer.search.sample_data import write_tiny_domain
    from autooptimizer.settings import get_settings
    from autooptimizer.tools import load_all_tools

    write_tiny_domain(tmp_path / "data" / "dom")
    write_tiny_domain(tmp_path / "holdout" / "dom")  # a held-out folder keeps its domain's name
    monkeypatch.setenv("AUTOOPT_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    res = load_all_tools().call("ml", "measure_serving_cost", {  # the versions do not exist: nothing was loaded
        "champion": "no-such-a", "challenger": "no-such-b", "data": [str(tmp_path / "holdout" / "dom"), "dom:test"]},
        env="dev", requested_by="test")
    assert res.error is not None and "['dom'] more than once" in res.error, res
    assert "Name each domain once" in res.error
