"""The retrain half of an NDCG cycle on tiny data: the retrain pipeline's steps (ml/pipeline.py) as the loop runs them,
the real tools through the real registry/PDP/audit, MLflow (sqlite), the live feedback log in the service's format;
held-out queries never reach training."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from fake_prometheus import FakeProm, vector

from autooptimizer.loop import retrain
from autooptimizer.ml import pipeline_data
from autooptimizer.search import aliases, model_store
from autooptimizer.search.model_store import ModelSpec
from autooptimizer.search.sample_data import write_tiny_domain, write_tiny_original
from autooptimizer.settings import get_settings

CHAMPION = "v1-parent"


@pytest.fixture
def prometheus(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Answers every instant query with 0 (no spend yet: the training budget is known)."""
    fake = FakeProm(lambda q: (200, vector(0)))
    monkeypatch.setenv("AUTOOPT_PROMETHEUS_URL", fake.url)
    get_settings.cache_clear()
    yield fake.url
    fake.close()


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "data"
    write_tiny_original(root / "scifact")  # the tools' original domain is `scifact` by name
    write_tiny_domain(root / "dom")
    monkeypatch.setenv("AUTOOPT_DATA_DIR", str(root))
    monkeypatch.setenv("AUTOOPT_THREADS", "1")
    get_settings.cache_clear()
    return root


def _live_log(data: Path, spec: ModelSpec, tmp_path: Path) -> Path:
    """The service's feedback log as the simulator fills it: query_id "<dataset>/<id>", no `dataset` field; SciFact
    traffic first, then every judged `dom` query (held-out ones too), one record served by another version."""
    from autooptimizer.ml.evaluate import load_split
    from autooptimizer.ml.feedback import simulate_feedback

    lines = []
    for name, split in (("scifact", "train"), ("dom", None)):
        collection, queries, qrels = load_split(data / name, split)
        out = simulate_feedback(spec, collection, queries, qrels, tmp_path / f"{name}.jsonl", dataset=name)
        for line in out.read_text().splitlines():
            rec = json.loads(line)
            lines.append({**rec, "query_id": f"{name}/{rec['query_id']}", "dataset": None})
    lines.append({**lines[-1], "model_version": "v-other"})
    log = get_settings().path("feedback", "feedback.jsonl")
    log.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return log


def _champion_serving_the_shift(data: Path, tmp_path: Path) -> ModelSpec:
    """A bi-encoder that is champion and gold, and a live log of it serving the shifted domain `dom`."""
    spec = ModelSpec(version=CHAMPION, kind="bi_encoder", fusion_weight=0.6, rerank_depth=20)
    model_store.save(spec)
    aliases.set_alias(aliases.CHAMPION, CHAMPION)
    aliases.set_alias(aliases.GOLD, CHAMPION)
    _live_log(data, spec, tmp_path)
    return spec


def test_demo_replays_only_the_feedback_half_of_the_shift_domain(data: Path) -> None:
    from autooptimizer.demo import DemoOptions, demo_workload

    wl = demo_workload(DemoOptions(datasets=["scifact"], shift_to="dom", max_queries=5, seed=4))
    fb, held = pipeline_data.domain_split("dom", 4)
    assert sorted(q.query_id for q in wl.queries["dom"]) == fb
    assert not {q.query_id for q in wl.queries["dom"]} & set(held)
    assert len(wl.queries["scifact"]) == 5


def test_retrain_runs_the_tools_in_order_and_keeps_the_holdout_out(data: Path, tmp_path: Path,
                                                                   prometheus: str) -> None:
    from autooptimizer.loop.cycle import CycleOptions, CycleRunner, CycleState
    from autooptimizer.ml import model_registry as registry
    from autooptimizer.ml.dataset import load_dataset
    from autooptimizer.ml.pipeline import STEP_NAMES

    _champion_serving_the_shift(data, tmp_path)

    runner = CycleRunner()
    opts = CycleOptions(trigger="test", seed=1)  # no domain given: inferred from the recent traffic
    rec = runner.begin(opts)
    state = CycleState(options=opts)
    art = Path(rec.artifacts_dir)
    out = retrain.run_retrain(runner, rec.id, opts, state, champion=CHAMPION, artifacts=art)

    assert state.domain == "dom"
    calls = [(d.agent, d.tool, d.decision) for d in state.decisions]
    assert calls == [("data", "build_dataset", "permit"), ("data", "explain_reranker", "permit"),
                     ("data", "augment_dataset", "permit"), ("data", "build_dataset", "permit"),
                     ("ml", "train_reranker", "permit"), ("ml", "register_model", "permit")] + \
        [("ml", "evaluate_model", "permit")] * 4 + [("ml", "measure_serving_cost", "permit")]
    steps = [s.name for s in runner.journal.get(rec.id).steps]
    assert steps == ["split", "feedback", "dataset", "diagnose", "augment", "dataset_final", "train", "register",
                     "evaluate"]
    assert steps == list(STEP_NAMES), "the loop journals the retrain pipeline's steps, in its order"
    for name in ("split.json", "feedback.jsonl", "base.dataset_manifest.yaml", "dataset_manifest.yaml",
                 "diagnostic_report.json", "augmented_dataset.csv", "mlflow_run_id.txt", "evaluation.json",
                 "train_result.json"):
        assert (art / name).is_file(), name

    split = json.loads((art / "split.json").read_text())
    held = set(split["holdout"])
    assert (split["feedback"], split["holdout"]) == tuple(map(list, pipeline_data.domain_split("dom", 1)))
    fed = [json.loads(x) for x in (art / "feedback.jsonl").read_text().splitlines()]
    assert {r["query_id"] for r in fed} == set(split["feedback"]), "every served feedback query, no held-out one"
    assert {(r["dataset"], r["model_version"]) for r in fed} == {("dom", CHAMPION)}

    final = yaml.safe_load((art / "dataset_manifest.yaml").read_text())
    base = yaml.safe_load((art / "base.dataset_manifest.yaml").read_text())
    assert final["domains"] == ["dom"] and final["parent_version"] == CHAMPION
    assert final["parent_dataset"] == base["hash"] and final["counts"]["augmented_queries"] > 0
    ds = load_dataset(final["hash"])
    assert not {q.query_id for q in ds.queries} & held, "held-out queries never reach training"

    report = json.loads((art / "diagnostic_report.json").read_text())
    assert report["verdict"] in ("corpus_shift", "model_regression", "data_issue") and report["queries"]

    challenger = out["model_version"]
    assert challenger.startswith("ltr-") and model_store.exists(challenger)
    run_id = (art / "mlflow_run_id.txt").read_text().strip()
    assert run_id == out["mlflow_run_id"] and registry.client().get_run(run_id).info.status == "FINISHED"
    assert aliases.get_alias("challenger") == challenger and aliases.get_alias(aliases.CHAMPION) == CHAMPION

    ev = json.loads((art / "evaluation.json").read_text())
    assert ev["champion"]["version"] == CHAMPION and ev["challenger"]["version"] == challenger
    assert ev["champion"]["new_domain_queries"] == len(held) == ev["holdout"]["queries"]
    assert ev["champion"]["original_queries"] == 5, "the original domain's test split (1 query per topic)"
    assert ev["challenger"]["original_ndcg@10"] == ev["champion"]["original_ndcg@10"], "gated expert"
    assert out["promotable"] is ev["promotable"] and ev["reasons"]
    gain = ev["challenger"]["new_domain_ndcg@10"] - ev["champion"]["new_domain_ndcg@10"]
    cost = ev["serving_cost"]
    from autooptimizer.search.serving_cost import DomainCost, budget_ratio

    assert cost["ratio"] == budget_ratio([DomainCost(**d) for d in cost["domains"]]) > 0, "held-out and test queries"
    assert ev["promotable"] == (gain >= ev["new_domain_margin"] and cost["ratio"] <= 1.2)


def _append_log(data: Path, name: str, spec: ModelSpec, tmp_path: Path) -> None:
    """Every judged query of `name` served by `spec`, appended to the live log in the simulator's form."""
    from autooptimizer.ml.evaluate import load_split
    from autooptimizer.ml.feedback import simulate_feedback

    collection, queries, qrels = load_split(data / name)
    out = simulate_feedback(spec, collection, queries, qrels, tmp_path / f"{name}-{spec.version}.jsonl", dataset=name)
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    with get_settings().feedback_log.open("a") as fh:
        fh.writelines(json.dumps({**r, "query_id": f"{name}/{r['query_id']}", "dataset": None}) + "\n" for r in recs)


def test_repairs_chain_from_the_champion_and_the_guard_keeps_the_first(data: Path, tmp_path: Path,
                                                                        prometheus: str) -> None:
    """Shift to A (dom), promote its repair, then shift to B (dom2): B's retrain starts from A's repair, keeps A's
    expert, holds A's fixed evaluation set out, and the forgetting guard scores A against A's promoted value."""
    from autooptimizer.loop.cycle import CycleOptions, CycleRunner, CycleState
    from autooptimizer.ml import forgetting as fg
    from autooptimizer.ml.dataset import load_dataset
    from autooptimizer.search.rerankers.ltr_fusion import LtrParams

    write_tiny_domain(data / "dom2")
    _champion_serving_the_shift(data, tmp_path)
    runner = CycleRunner()

    def repair(domain: str, champion: str) -> tuple[CycleState, dict, Path]:
        opts = CycleOptions(trigger="test", seed=1, domain_data=domain)
        rec = runner.begin(opts)
        state = CycleState(options=opts)
        out = retrain.run_retrain(runner, rec.id, opts, state, champion=champion, artifacts=Path(rec.artifacts_dir))
        return state, out, Path(rec.artifacts_dir)

    state_a, out_a, _ = repair("dom", CHAMPION)
    a = out_a["model_version"]
    set_a = fg.get_set("dom")
    assert set_a is not None and fg.get_set("scifact:test") is not None
    rows_a = {r["set"]: r for r in state_a.forgetting["rows"]}
    assert set(rows_a) == {"dom", "scifact:test"}
    raised = fg.record_promotion(state_a.forgetting, a, "si_a")  # what a watched promotion of A records
    assert raised["dom"] == rows_a["dom"]["challenger"]
    aliases.set_alias(aliases.CHAMPION, a)
    _append_log(data, "dom2", model_store.load(a), tmp_path)

    state_b, out_b, art_b = repair("dom2", a)
    b = model_store.load(out_b["model_version"])
    assert b.parent == a, "the second repair trains from the champion, not gold"
    experts = [e.name.split("-")[0] for e in LtrParams.model_validate(b.params).experts]
    assert experts == ["dom", "dom2"], "A's expert is kept"
    assert fg.get_set("dom") == set_a, "A's evaluation set stays fixed"
    ds = load_dataset(yaml.safe_load((art_b / "dataset_manifest.yaml").read_text())["hash"])
    assert not {(q.dataset, q.query_id) for q in ds.queries} & fg.excluded()
    rows = {r["set"]: r for r in state_b.forgetting["rows"]}
    assert set(rows) == {"dom", "dom2", "scifact:test"}
    assert rows["dom"]["best"] == raised["dom"] and rows["dom"]["challenger"] >= raised["dom"] - 0.01
    assert rows["dom"]["ok"] and state_b.forgetting["ok"] is True
    evals = [d.tool for d in state_b.decisions].count("evaluate_model")
    assert evals == 7, "6 of the promotion rule (gold differs now) + B's challenger on A's set (gold's is cached)"
    ev = json.loads((art_b / "evaluation.json").read_text())
    assert ev["forgetting"] == state_b.forgetting and ev["promotable"] is out_b["promotable"]


# -- a gate that keeps firing with no new feedback does not retrain ---------------------------------------------------
def _judged(qids: range, ts: float, served_by: str = CHAMPION) -> list[str]:
    return [json.dumps({"query_id": f"dom/{q}", "dataset": None, "model_version": served_by, "ts": ts,
                        "judgments": {"d1": 1}, "ndcg10": 0.3}) for q in qids]


def _finished_retrain(runner, feedback: range, holdout: range) -> str:  # noqa: ANN001
    """A journaled cycle that trained a challenger for `dom` from CHAMPION on `feedback`, holding out `holdout`."""
    rec = runner.journal.new_cycle(trigger="gate", env="dev", gate="ndcg_drop")
    art = Path(rec.artifacts_dir)
    (art / "feedback.jsonl").write_text("".join(json.dumps({"query_id": str(q), "dataset": "dom"}) + "\n"
                                                for q in feedback))
    (art / "split.json").write_text(json.dumps({"holdout": [str(q) for q in holdout]}))
    runner.journal.finish(rec.id, "finished", "ab_inconclusive", summary={
        "domain": "dom", "champion": CHAMPION, "challenger": "v2-child"})
    return rec.id


def test_a_retrain_needs_feedback_the_last_one_did_not_have(tmp_path: Path) -> None:
    from autooptimizer.loop.cycle import CycleRunner
    from autooptimizer.loop.cycle_types import CycleOptions, CycleState, CycleStop
    from autooptimizer.profiles import load_profile

    runner = CycleRunner(profile=load_profile("prod"))  # retrain.minNewFeedback: 40
    log = get_settings().feedback_log
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("\n".join(_judged(range(100), ts=1.0) + _judged(range(100, 120), 2.0, "v-other")) + "\n")
    last = _finished_retrain(runner, feedback=range(50), holdout=range(50, 90))
    ps = retrain.retrain_state(runner, CycleOptions(domain_data="dom"), champion=CHAMPION, artifacts=tmp_path)
    why, info = retrain.stale_retrain(runner, ps)
    assert info == {"last_retrain": last, "new_judged_queries": 10, "needed": 40,  # 90..99; v-other's not counted
                    "counted": "not in its feedback or holdout"}
    assert why == (f"no new feedback: cycle {last} already retrained dom from {CHAMPION} (ab_inconclusive); 10 "
                   "judged dom queries are new since, retrain.minNewFeedback asks for 40")
    with log.open("a") as fh:
        fh.write("\n".join(_judged(range(100, 130), ts=3.0)) + "\n")
    assert retrain.stale_retrain(runner, ps) == (None, {**info, "new_judged_queries": 40})

    # its artifacts pruned: judged queries logged after it started count instead (the log above predates it)
    for f in ("feedback.jsonl", "split.json"):
        (Path(runner.journal.get(last).artifacts_dir or "") / f).unlink()
    why, info = retrain.stale_retrain(runner, ps)
    assert info["counted"] == "since it started" and info["new_judged_queries"] == 0 and why

    # the cycle: a gate-started one stops at `new_feedback` (no_remedy, nothing trained); an operator's is not asked
    opts = CycleOptions(trigger="gate", gate="ndcg_drop", domain_data="dom")
    rec = runner.begin(opts)
    with pytest.raises(CycleStop) as stop:
        retrain.run_retrain(runner, rec.id, opts, CycleState(options=opts), champion=CHAMPION,
                            artifacts=tmp_path / "a")
    assert (stop.value.outcome, stop.value.restore) == ("no_remedy", False)
    assert [(s.name, s.status) for s in runner.journal.get(rec.id).steps] == [("new_feedback", "done")]
    manual = CycleOptions(trigger="manual", domain_data="dom")
    rec = runner.begin(manual)
    with pytest.raises(Exception):  # noqa: B017, PT011 - it goes on to the pipeline, which has no `dom` data here
        retrain.run_retrain(runner, rec.id, manual, CycleState(options=manual), champion=CHAMPION,
                            artifacts=tmp_path / "b")
    steps = [s.name for s in runner.journal.get(rec.id).steps]
    assert steps and "new_feedback" not in steps
    assert retrain.last_retrain(runner, "dom", CHAMPION, before=rec.id) is not None
    assert retrain.last_retrain(runner, "dom", "v-other") is None
