"""NDCG@10 known answers, computed by hand, for the offline (run) and the online (served ranking) paths; each point of
the module's definition; and that no other module computes NDCG."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest

from autooptimizer.search.metrics_eval import ndcg10_ranking, ndcg_at_10, ndcg_at_10_per_query

# judgments a=2, b=1; ranking b, x, a: DCG = 1/log2(2) + 2/log2(4) = 2; IDCG = 2 + 1/log2(3)
EXPECTED = 2 / (2 + 1 / math.log2(3))  # 0.76019...


def test_known_answer_online():
    assert ndcg10_ranking(["b", "x", "a"], {"a": 2, "b": 1, "z": 0}) == pytest.approx(EXPECTED)
    assert ndcg10_ranking(["a", "b"], {"a": 2, "b": 1}) == pytest.approx(1.0)
    assert ndcg10_ranking(["x"] * 3, {"a": 1}) == 0.0
    assert ndcg10_ranking(["a"], {"a": 0}) is None


def test_known_answer_offline_matches_online():
    run = {"q1": {"b": 3.0, "x": 2.0, "a": 1.0}}
    qrels = {"q1": {"a": 2, "b": 1}, "q2": {"c": 1}, "q3": {"d": 0}}
    per = ndcg_at_10_per_query(run, qrels)
    assert per == {"q1": pytest.approx(EXPECTED, abs=1e-4), "q2": 0.0}  # q3 has no relevant doc: not counted
    assert ndcg_at_10(run, qrels) == pytest.approx(EXPECTED / 2, abs=1e-4)


def test_cutoff_at_ten():
    ranking = [f"n{i}" for i in range(10)] + ["a"]
    assert ndcg10_ranking(ranking, {"a": 1}) == 0.0
    assert ndcg_at_10({"q": {d: 100.0 - i for i, d in enumerate(ranking)}}, {"q": {"a": 1}}) == 0.0


# ---- the definition, point by point (module docstring) ----------------------------------------------------------
D2, D3, D4 = math.log2(3), 2.0, math.log2(5)  # discounts of ranks 2, 3, 4


def test_negative_grades_count_as_zero() -> None:
    # b = -1 served first: it takes rank 1 and adds 0 (not -1); the ideal holds only a=2, c=1
    want = (2 / D2 + 1 / D3) / (2 + 1 / D2)
    assert ndcg10_ranking(["b", "a", "c"], {"a": 2, "b": -1, "c": 1}) == pytest.approx(want)
    run = {"q": {"b": 3.0, "a": 2.0, "c": 1.0}}
    assert ndcg_at_10_per_query(run, {"q": {"a": 2, "b": -1, "c": 1}})["q"] == pytest.approx(want)
    assert ndcg10_ranking(["b"], {"b": -2}) is None  # no positive grade: no NDCG


def test_a_repeated_document_counts_once_and_keeps_its_slot() -> None:
    # served a, a, b: the second a adds nothing, and b stays at rank 3
    assert ndcg10_ranking(["a", "a", "b"], {"a": 1, "b": 1}) == pytest.approx((1 + 1 / D3) / (1 + 1 / D2))
    assert ndcg10_ranking(["a", "a", "a", "b"], {"a": 2, "b": 1}) == pytest.approx((2 + 1 / D4) / (2 + 1 / D2))
    # the tenth slot is the last one, repeats included
    assert ndcg10_ranking(["a"] * 10 + ["b"], {"a": 1, "b": 1}) == pytest.approx(1 / (1 + 1 / D2))


def test_a_repeat_placeholder_never_meets_a_judged_id() -> None:
    judged = {"a": 1, "<repeat 1>": 3, "<repeat 1>~": 2}  # ids that look like the placeholder
    assert ndcg10_ranking(["a", "a"], judged) == pytest.approx(1 / (3 + 2 / D2 + 1 / D3))


def test_equal_scores_are_ordered_by_doc_id_descending() -> None:
    run = {"q": {"a": 1.0, "b": 1.0}}
    assert ndcg_at_10_per_query(run, {"q": {"a": 1}})["q"] == pytest.approx(1 / D2)  # b before a
    assert ndcg_at_10_per_query(run, {"q": {"b": 1}})["q"] == pytest.approx(1.0)


def _by_hand(ranking: list[str], judged: dict[str, int]) -> float | None:
    """The module docstring's definition, written out: linear gain, grades below 0 as 0, a repeat adds nothing."""
    ideal = sorted((g for g in judged.values() if g > 0), reverse=True)[:10]
    if not ideal:
        return None
    dcg = sum(max(judged.get(d, 0), 0) / math.log2(i + 2) for i, d in enumerate(ranking[:10]) if d not in ranking[:i])
    return dcg / sum(g / math.log2(i + 2) for i, g in enumerate(ideal))


def test_the_definition_holds_on_random_rankings() -> None:
    import random

    rng = random.Random(7)
    for _ in range(300):
        docs = [f"d{i}" for i in range(12)]
        judged = {d: rng.choice([-1, 0, 0, 1, 2, 3]) for d in rng.sample(docs, rng.randint(1, 12))}
        ranking = [rng.choice(docs) for _ in range(rng.randint(0, 14))]
        want, got = _by_hand(ranking, judged), ndcg10_ranking(ranking, judged)
        assert (got is None) == (want is None)
        if got is not None:
            assert got == pytest.approx(want, abs=1e-12) and 0.0 <= got <= 1.0
        unique = list(dict.fromkeys(ranking))  # without repeats, a run of falling scores is the same question
        if got is not None and unique == ranking:
            run = {"q": {d: 100.0 - i for i, d in enumerate(ranking)}}
            assert ndcg_at_10_per_query(run, {"q": judged})["q"] == pytest.approx(got, abs=1e-12)


# ---- one source: nothing else in the package computes NDCG --------------------------------------------------------
PACKAGE = Path(__file__).resolve().parents[1] / "autooptimizer"
# files allowed a log2: why each one is not a second NDCG definition
LOG2_ALLOWED = {
    "ml/ltr.py": "the training objective, vectorised over score arrays; tests/test_ml_ltr.py checks it agrees",
    "ml/diagnose.py": "the Jensen-Shannon divergence of term distributions, not a DCG",
}


def _trees() -> list[tuple[str, ast.AST]]:
    return [(p.relative_to(PACKAGE).as_posix(), ast.parse(p.read_text())) for p in sorted(PACKAGE.rglob("*.py"))]


def _is_log2_call(node: ast.AST) -> bool:
    """log2(x) under any name (math., np., torch.), or log(x, 2)."""
    if not isinstance(node, ast.Call):
        return False
    name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
    base_two = len(node.args) == 2 and isinstance(node.args[1], ast.Constant) and node.args[1].value == 2
    return name == "log2" or (name == "log" and base_two)


def _imports(tree: ast.AST) -> set[str]:
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    return names | {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}


def test_no_other_module_computes_a_dcg() -> None:
    found = sorted(name for name, tree in _trees() if any(_is_log2_call(n) for n in ast.walk(tree)))
    assert found == sorted(LOG2_ALLOWED)  # metrics_eval has none either: ir_measures computes it


def test_only_this_module_calls_ir_measures() -> None:
    callers = sorted(name for name, tree in _trees() if _imports(tree) & {"ir_measures", "pytrec_eval"})
    assert callers == ["search/metrics_eval.py"]
