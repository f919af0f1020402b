"""NDCG@10 known answers, computed by hand, for the offline (ir_measures) and the online (feedback) paths."""

from __future__ import annotations

import math

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
