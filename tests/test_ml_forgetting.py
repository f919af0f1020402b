"""The forgetting guard (ml/forgetting.py): known answers, fixed evaluation sets that fail closed, the dataset builder
and training never seeing an evaluation query, and the guard as the pipeline's evaluate step runs it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from autooptimizer.ml import forgetting as fg
from autooptimizer.ml.forgetting import GuardRow, judge


def _row(name: str, challenger: float | None, best: float | None = None, gold: float | None = None) -> GuardRow:
    return GuardRow(set=name, challenger=challenger, best=best, gold=gold)


@pytest.mark.parametrize(("row", "ok", "reference", "drop"), [
    (_row("a", 0.80, best=0.80, gold=0.50), True, 0.80, 0.0),
    (_row("a", 0.79, best=0.80, gold=0.50), True, 0.80, 0.01),        # exactly the tolerance: allowed
    (_row("a", 0.7899, best=0.80, gold=0.50), False, 0.80, 0.0101),   # just past it: refused
    (_row("orig", 0.70, best=0.69, gold=0.72), False, 0.72, 0.02),    # gold is the reference when it is higher
    (_row("orig", 0.715, best=None, gold=0.72), True, 0.72, 0.005),   # nothing promoted yet: gold alone
    (_row("new", 0.40, best=None, gold=None), True, None, None),      # nothing to lose yet
    (_row("a", None, best=0.80), False, 0.80, None),                  # unknown score never passes
    (_row("a", float("nan"), best=0.80), False, 0.80, None),
    (_row("new", None), False, None, None),
])
def test_known_answers(row: GuardRow, ok: bool, reference: float | None, drop: float | None) -> None:
    res = judge([row], 0.01)
    assert res.ok is ok and res.rows[0].ok is ok
    assert res.rows[0].reference == reference
    assert res.rows[0].drop == (pytest.approx(drop) if drop is not None else None)
    assert any(f": {row.set}: " in r for r in res.reasons) is (not ok)


def test_one_forgotten_domain_refuses_the_whole_promotion() -> None:
    res = judge([_row("a", 0.81, best=0.80), _row("b", 0.60, best=0.70), _row("orig", 0.72, best=0.72)], 0.01)
    assert res.ok is False and [r.set for r in res.rows if not r.ok] == ["b"]
    assert res.reasons == ["forgetting guard: b: drop +0.1000 > tolerance 0.01"]


def test_a_problem_refuses_outright() -> None:
    res = judge([_row("a", 0.9, best=0.8)], 0.01, ["best.json is unreadable"])
    assert not res.ok and "best.json is unreadable" in res.reasons[0]


def test_a_set_is_fixed_once_and_hash_checked() -> None:
    first = fg.fix_set("dom", "dom", ["3", "1", "2"], cycle_id="si_1")
    again = fg.fix_set("dom", "dom", ["9"], cycle_id="si_2")
    assert again == first and first.qids == ["1", "2", "3"] and first.cycle_id == "si_1"
    assert fg.qids_file(first).read_text() == "1\n2\n3\n"
    path = fg.evalsets_dir() / "dom.json"
    doc = json.loads(path.read_text())
    doc["qids"] = ["1", "2"]  # a set quietly shrunk: its hash no longer matches
    path.write_text(json.dumps(doc))
    with pytest.raises(fg.EvalSetError, match="does not match its hash"):
        fg.load_sets()
    path.write_text("{not json")
    with pytest.raises(fg.EvalSetError, match="unreadable"):
        fg.excluded()


def test_the_best_value_rises_only_on_a_better_promotion() -> None:
    table = {"rows": [{"set": "a", "challenger": 0.8, "hash": "h"}, {"set": "b", "challenger": None}]}
    assert fg.record_promotion(table, "v1", "si_1") == {"a": 0.8}
    assert fg.record_promotion({"rows": [{"set": "a", "challenger": 0.75}]}, "v2", "si_2") == {}
    assert fg.read_best().best["a"] == {"ndcg@10": 0.8, "version": "v1", "cycle_id": "si_1", "hash": "h"}
    (fg.evalsets_dir() / fg.BEST_FILE).write_text("[]")
    with pytest.raises(fg.EvalSetError):
        fg.read_best()


def _feedback(path: Path, rows: list[tuple[str, str]]) -> Path:
    recs = [{"query": f"query {ds} {q}", "query_id": f"{ds}/{q}", "model_version": "v1",
             "judgments": {f"{ds}/d{q}": 1}} for ds, q in rows]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def test_the_dataset_builder_drops_evaluation_queries_and_training_refuses_them(tmp_path: Path) -> None:
    from autooptimizer.ml.dataset import build_dataset, load_dataset

    fg.fix_set("dom", "dom", ["2", "4"])
    fg.fix_set("orig", "orig", ["t1"], split="test")
    fb = _feedback(tmp_path / "fb.jsonl", [("dom", "1"), ("dom", "2"), ("dom", "3"), ("dom", "4"), ("orig", "t1"),
                                           ("other", "2")])
    manifest = build_dataset(fb, parent_version="v1")
    ids = {(q.dataset, q.query_id) for q in load_dataset(manifest.hash).queries}
    assert ids == {("dom", "1"), ("dom", "3"), ("other", "2")}, "same id in another domain is kept"
    assert manifest.eval_records_dropped == 3
    fg.assert_unseen(ids, "kept")  # nothing held out is left
    with pytest.raises(fg.EvalSetError, match=r"dom/2"):
        fg.assert_unseen([*ids, ("dom", "2")], "a dataset built before the set was fixed")


def test_training_refuses_a_dataset_built_before_the_set_was_fixed(tmp_path: Path) -> None:
    from autooptimizer.ml.dataset import build_dataset
    from autooptimizer.ml.train import train

    manifest = build_dataset(_feedback(tmp_path / "fb.jsonl", [("dom", "1"), ("dom", "2")]), parent_version="v1")
    fg.fix_set("dom", "dom", ["2"])
    with pytest.raises(fg.EvalSetError, match="fixed evaluation set"):
        train(manifest.hash, parent_version="v1")


# -- the guard inside the pipeline's evaluate step ------------------------------------------------------------------
class Scores:
    """Answers the guard's gated evaluate_model calls from a table: (model, set key) -> NDCG@10."""

    def __init__(self, table: dict[tuple[str, str], float]) -> None:
        self.table, self.calls = table, list[dict[str, Any]]()

    def __call__(self, step: Any, call: Any, args: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(args)
        key = fg.set_key(Path(args["data"]).name, args.get("split"))
        return {"ndcg@10": self.table[(args["model"], key)], "queries": 2}


def _state(challenger_b: float) -> Any:
    from autooptimizer.ml.pipeline import PipelineState

    return PipelineState(fixed_eval_sets=True, domain_data="b", domain="b", original="orig", champion="vA",
                         challenger="vB", gold="gold", evaluations={
                             "challenger/new_domain": {"ndcg@10": challenger_b},
                             "champion/new_domain": {"ndcg@10": 0.3},
                             "gold/new_domain": {"ndcg@10": 0.3}, "challenger/original": {"ndcg@10": 0.70},
                             "champion/original": {"ndcg@10": 0.70}, "gold/original": {"ndcg@10": 0.70}})


@pytest.mark.parametrize(("on_a", "ok"), [(0.795, True), (0.78, False)])
def test_the_guard_checks_every_earlier_domain(on_a: float, ok: bool) -> None:
    from autooptimizer.ml.pipeline import _forgetting

    fg.fix_set("orig", "orig", ["t1", "t2"], split="test")
    fg.fix_set("a", "a", ["1", "2"])
    fg.fix_set("b", "b", ["5", "6"])
    fg.record_promotion({"rows": [{"set": "a", "challenger": 0.80}, {"set": "orig:test", "challenger": 0.70}]},
                        "vA", "si_1")
    scores = Scores({("vB", "a"): on_a, ("gold", "a"): 0.40})
    guard = _forgetting(_state(0.6), scores, "gold")
    rows = {r["set"]: r for r in guard["rows"]}
    assert set(rows) == {"orig:test", "a", "b"}
    assert rows["a"]["challenger"] == on_a and rows["a"]["best"] == 0.80 and rows["a"]["gold"] == 0.40
    assert rows["b"]["challenger"] == 0.6 and rows["b"]["reference"] == 0.3, "gold on the new domain, this cycle"
    assert guard["ok"] is ok and rows["a"]["ok"] is ok and rows["b"]["ok"] and rows["orig:test"]["ok"]
    assert [(c["model"], c["data"]) for c in scores.calls] == [("vB", "a"), ("gold", "a")]
    assert scores.calls[0]["qids_file"].endswith("a.qids")
    _forgetting(_state(0.6), scores, "gold")
    assert [c["model"] for c in scores.calls[2:]] == ["vB"], "gold's score on a set is cached"


def test_an_unreadable_set_refuses_promotion() -> None:
    from autooptimizer.ml.pipeline import _forgetting

    fg.fix_set("a", "a", ["1", "2"])
    (fg.evalsets_dir() / "a.json").write_text("{}")
    guard = _forgetting(_state(0.6), Scores({}), "gold")
    assert guard["ok"] is False and "a.json is unreadable" in guard["reasons"][0]
