"""Offline evaluation against hand-computed rankings, and the promotion rule's thresholds from the profile."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from autooptimizer.errors import InputError, NotFoundError
from autooptimizer.ml.evaluate import evaluate_run, promotion_rule, resolve_model
from autooptimizer.settings import get_settings

QRELS = {
    "q1": {"d1": 2, "d2": 1, "d7": 0},
    "q2": {"d5": 1},
    "q3": {"d9": 1},  # never retrieved
    "q4": {"d4": 0},  # nothing relevant: not evaluated
}
RUN = {
    "q1": {"d3": 3.0, "d1": 2.0, "d2": 1.0},
    "q2": {"d5": 9.0, "d6": 1.0},
    "q4": {"d4": 1.0},
}


def test_known_answer_rankings() -> None:
    res = evaluate_run(RUN, QRELS)
    # q1: DCG = 2/log2(3) + 1/log2(4); IDCG = 2/log2(2) + 1/log2(3)
    q1 = (2 / math.log2(3) + 1 / math.log2(4)) / (2 + 1 / math.log2(3))
    assert res.queries == 3
    assert res.ndcg_at_10 == pytest.approx(round((q1 + 1.0 + 0.0) / 3, 4), abs=1e-4)
    assert res.mrr_at_10 == pytest.approx((0.5 + 1.0 + 0.0) / 3, abs=1e-4)
    assert res.recall_at_100 == pytest.approx((1.0 + 1.0 + 0.0) / 3, abs=1e-4)
    assert set(res.public()) == {"ndcg@10", "mrr@10", "recall@100", "queries"}


def test_rank_beyond_cutoffs() -> None:
    run = {"q": {f"x{i}": 100.0 - i for i in range(150)}}
    run["q"]["rel"] = 100.0 - 10.5  # rank 11: outside @10, inside @100
    res = evaluate_run(run, {"q": {"rel": 1}})
    assert res.ndcg_at_10 == 0.0 and res.mrr_at_10 == 0.0 and res.recall_at_100 == 1.0


def test_nothing_to_evaluate_is_an_error() -> None:
    with pytest.raises(InputError, match="No query has a positive judgment"):
        evaluate_run(RUN, {"q4": {"d4": 0}})


def test_promotion_rule_thresholds_come_from_the_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    champ = {"new_domain_ndcg@10": 0.40, "original_ndcg@10": 0.72}
    good = {"new_domain_ndcg@10": 0.45, "original_ndcg@10": 0.715}
    assert promotion_rule(champ, good, champ, env="dev", serving_cost_ratio=1.0).promotable
    regress = {"new_domain_ndcg@10": 0.45, "original_ndcg@10": 0.70}
    d = promotion_rule(champ, regress, champ, env="dev", serving_cost_ratio=1.0)
    assert not d.promotable and any("original-domain drop vs champion" in r for r in d.reasons)
    small = {"new_domain_ndcg@10": 0.405, "original_ndcg@10": 0.72}
    assert not promotion_rule(champ, small, champ, env="dev", serving_cost_ratio=1.0).promotable
    gold = {"new_domain_ndcg@10": 0.30, "original_ndcg@10": 0.74}
    d = promotion_rule(champ, good, gold, env="dev", serving_cost_ratio=1.0)
    assert not d.promotable and any("vs gold" in r for r in d.reasons)
    # a profile with a larger margin changes the decision: thresholds are not hard-coded
    (tmp_path / "dev.yaml").write_text("name: dev\npromotion:\n  newDomainMargin: 0.1\n  originalTolerance: 0.01\n")
    monkeypatch.setenv("AUTOOPT_PROFILES_DIR", str(tmp_path))
    d = promotion_rule(champ, good, champ, env="dev", serving_cost_ratio=1.0)
    assert not d.promotable and d.new_domain_margin == 0.1


def test_missing_alias_is_a_clear_error() -> None:
    get_settings.cache_clear()
    with pytest.raises(NotFoundError, match="alias 'challenger'"):
        resolve_model("challenger")
    with pytest.raises(NotFoundError, match="not found"):
        resolve_model("v-does-not-exist")


def test_evaluate_model_tool_scores_only_the_listed_holdout(tmp_path: Path) -> None:
    """The agents' evaluate_model must be able to leave out the queries a challenger was trained on."""
    from autooptimizer.search import model_store
    from autooptimizer.search.model_store import ModelSpec
    from autooptimizer.search.sample_data import write_tiny_beir
    from autooptimizer.tools import load_all_tools

    data = write_tiny_beir(tmp_path / "tiny")
    model_store.save(ModelSpec(version="bm25-only", kind="bm25", fusion_weight=0.0))
    (tmp_path / "held.txt").write_text("q-ocean\nq-virus\n")
    reg = load_all_tools()
    every = reg.call("ml", "evaluate_model", {"model": "bm25-only", "data": str(data)})
    held = reg.call("ml", "evaluate_model", {"model": "bm25-only", "data": str(data),
                                             "qids_file": str(tmp_path / "held.txt")})
    assert every.executed and held.executed, (every.error, held.error)
    assert held.result["queries"] == 2 < every.result["queries"]


def test_promotion_rule_refuses_a_challenger_over_the_serving_cost_budget(tmp_path, monkeypatch) -> None:
    """The speed issue's latency budget: CPU per query (side by side) at most maxServingCostRatio x the champion's;
    an unmeasured or non-finite ratio is refused; a profile may switch the check off with null."""
    import shutil

    import yaml

    from autooptimizer.profiles import profile_path

    champ = {"new_domain_ndcg@10": 0.40, "original_ndcg@10": 0.70}
    good = {"new_domain_ndcg@10": 0.50, "original_ndcg@10": 0.70}
    for ratio, ok in ((1.0, True), (1.2, True), (1.21, False), (3.0, False), (None, False), (float("nan"), False)):
        d = promotion_rule(champ, good, champ, env="dev", serving_cost_ratio=ratio)
        assert d.promotable is ok, (ratio, d.reasons)
        assert any("serving cost" in r for r in d.reasons)
    profiles = tmp_path / "profiles"
    shutil.copytree(profile_path("dev").parent, profiles, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    dev = yaml.safe_load((profiles / "dev.yaml").read_text())
    dev["promotion"]["maxServingCostRatio"] = None
    (profiles / "dev.yaml").write_text(yaml.safe_dump(dev))
    monkeypatch.setenv("AUTOOPT_PROFILES_DIR", str(profiles))
    d = promotion_rule(champ, good, champ, env="dev", serving_cost_ratio=None)
    assert d.promotable and not any("serving cost" in r for r in d.reasons)
