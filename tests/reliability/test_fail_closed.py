"""Failure mode 1: missing data must never read as safe.

Every fact the PDP reads and every guard input the loop reads is made unreadable in turn; the decision must be
`deny` or `needs_approval` (or "not promotable" / "unknown"), never the permissive default. The first case is the
reported input: Prometheus up, but the cost series gone.
"""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import pytest
from fake_prometheus import FakeProm, vector

from autooptimizer.infra.net import free_port
from autooptimizer.infra.prometheus import Prometheus
from autooptimizer.ml.evaluate import promotion_rule
from autooptimizer.policies.audit import AuditLog
from autooptimizer.policies.pdp import get_pdp
from autooptimizer.settings import get_settings
from autooptimizer.tools import load_all_tools
from autooptimizer.tools.ml import spent_so_far

TRAIN = {"dataset": "0123456789abcdef", "time_budget_s": 60}


def _use_prometheus(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("AUTOOPT_PROMETHEUS_URL", url)
    get_settings.cache_clear()


def _train_decision() -> tuple[str, dict]:
    """What the registry decides for a training call (the tool itself never runs: it needs approval)."""
    reg = load_all_tools()
    facts, rejected = reg.facts_for("train_reranker", TRAIN)
    assert rejected is None
    res = reg.call("ml", "train_reranker", TRAIN)
    assert not res.executed
    return res.decision, facts


@pytest.mark.prometheus
def test_cost_series_gone_with_prometheus_up_needs_approval(tmp_path: Path, monkeypatch) -> None:
    """The reported input: a real Prometheus that answers, with no cost series (its exporter stopped)."""
    port = free_port()
    with Prometheus(tmp_path / "prom", port, {"self": [f"127.0.0.1:{port}"]}) as prom:
        prom.wait_for('up{job="self"} == 1', timeout=20)  # Prometheus really answers queries
        _use_prometheus(monkeypatch, prom.url)
        assert spent_so_far(get_settings().prometheus_url) is None
        decision, facts = _train_decision()
    assert "budget_remaining" not in facts, "an unknown spend must not become the whole budget"
    assert decision == "needs_approval"
    rec = [r for r in AuditLog().records() if r["kind"] == "decision"][-1]
    assert rec["policies"] == ["shared.train-over-budget"] and "budget_remaining" not in rec["context"]


@pytest.mark.parametrize("answer", [
    (200, vector()),                                   # no series at all
    (200, vector("NaN")),                              # the sum is not a number
    (200, vector("-3.0")),                             # a negative spend is garbage, not credit
    (200, vector(1.0, 2.0)),                           # two series where one sum was asked: not one spend
    (500, {"status": "error", "error": "boom"}),       # Prometheus errors
    (200, b"not json"),                                # garbage body
], ids=["empty", "nan", "negative", "two-series", "http-500", "garbage"])
def test_unreadable_spend_is_unknown_and_training_needs_approval(monkeypatch, answer) -> None:
    fake = FakeProm(lambda q: answer)
    try:
        _use_prometheus(monkeypatch, fake.url)
        assert spent_so_far(get_settings().prometheus_url) is None
        decision, facts = _train_decision()
    finally:
        fake.close()
    assert "budget_remaining" not in facts and decision == "needs_approval"


def test_prometheus_down_needs_approval(monkeypatch) -> None:
    _use_prometheus(monkeypatch, f"http://127.0.0.1:{free_port()}")
    decision, facts = _train_decision()
    assert "budget_remaining" not in facts and decision == "needs_approval"


def test_a_real_spend_gives_the_remaining_budget(monkeypatch) -> None:
    """The control case: with a readable spend the fact is budget - spend, and a cheap run is permitted."""
    fake = FakeProm(lambda q: (200, vector(1.25)))
    try:
        _use_prometheus(monkeypatch, fake.url)
        facts, _ = load_all_tools().facts_for("train_reranker", TRAIN)
    finally:
        fake.close()
    assert facts["budget_remaining"] == pytest.approx(5.0 - 1.25)
    assert get_pdp("dev").decide("ml", "train_reranker", {**facts, "in_scope": True}).decision == "permit"


def test_unreadable_ab_result_is_not_a_pass(autoopt_home: Path) -> None:
    from autooptimizer.testing import make_versions
    from autooptimizer.tools.devops import ab_result_path

    make_versions(["v-b"])
    path = ab_result_path(get_settings(), "v-b")
    for text in ("{not json", json.dumps({"verdict": "pass"}), json.dumps([1, 2])):
        path.write_text(text)  # garbage; a pass that names no treatment; the wrong shape
        res = load_all_tools().call("devops", "promote_model", {"model_version": "v-b"})
        assert (res.decision, res.executed) == ("deny", False), text
        assert "shared.promote-needs-ab" in res.policies


def test_unreadable_approval_store_denies_and_audits(autoopt_home: Path) -> None:
    """An approval that cannot be read is not an approval, and the call still ends in one audited decision."""
    db = get_settings().path("approvals.db")
    db.write_bytes(b"this is not a sqlite database" * 100)
    res = load_all_tools().call("ml", "train_reranker", TRAIN, approval_id="a-123")
    assert (res.decision, res.executed) == ("deny", False)
    assert res.policies == ["registry.context-unavailable"] and "approval" in res.error
    recs = [r for r in AuditLog().records() if r["kind"] == "decision"]
    assert len(recs) == 1 and recs[0]["decision"] == "deny"
    with pytest.raises(sqlite3.DatabaseError):
        sqlite3.connect(db).execute("select 1 from approvals").fetchall()


GOOD = {"new_domain_ndcg@10": 0.4, "original_ndcg@10": 0.7}
WINNER = {"new_domain_ndcg@10": 0.6, "original_ndcg@10": 0.7}


@pytest.mark.parametrize(("champion", "challenger", "gold"), [
    (GOOD, {**WINNER, "new_domain_ndcg@10": math.nan}, GOOD),
    (GOOD, {**WINNER, "new_domain_ndcg@10": None}, GOOD),
    ({**GOOD, "original_ndcg@10": math.nan}, WINNER, GOOD),
    (GOOD, WINNER, {"new_domain_ndcg@10": 0.4}),
    (GOOD, {"new_domain_ndcg@10": 0.9}, GOOD),
    (GOOD, {**WINNER, "new_domain_ndcg@10": math.inf}, GOOD),
], ids=["nan-gain", "none-gain", "nan-original", "gold-unknown", "original-missing", "inf-gain"])
def test_promotion_rule_with_an_unknown_score_is_not_promotable(champion, challenger, gold) -> None:
    assert promotion_rule(GOOD, WINNER, GOOD, serving_cost_ratio=1.0).promotable  # the control: every score known
    decision = promotion_rule(champion, challenger, gold, serving_cost_ratio=1.0)
    assert not decision.promotable
    assert any("unknown" in r for r in decision.reasons)


def test_a_target_that_hides_its_replicas_is_not_consistent() -> None:
    from autooptimizer.loop.deployer import DeployState
    from autooptimizer.loop.gitops import HelmPatch

    patch = HelmPatch(model_version="v-a", replicas=2)
    assert DeployState(stable="v-a", replicas=2).matches(patch)
    assert not DeployState(stable="v-a", replicas=None).matches(patch)
    assert not DeployState(stable=None, replicas=2).matches(patch)


class _Blind:
    """A sample source whose guard readings can be taken away one at a time (what a stopped Prometheus does)."""

    def __init__(self, **missing: object) -> None:
        from autooptimizer.testing import SyntheticSource

        self.inner = SyntheticSource({"v-a": 0.5, "v-b": 0.5})
        self.feedback = self.inner
        self.missing = missing

    def snapshot(self, model_version: str, since: float):  # noqa: ANN201
        snap = self.inner.snapshot(model_version, since)
        return snap.model_copy(update=self.missing)


def _watch(source: object) -> dict:
    import time

    from autooptimizer.loop.abtest import ABConfig
    from autooptimizer.loop.watch import watch_deployment

    return watch_deployment(source, new="v-b", old="v-a", seconds=0.0, config=ABConfig(), since=time.time(),
                            sleep=lambda s: None)


@pytest.mark.parametrize(("missing", "words"), [
    ({}, None),  # the control: everything readable, no degradation -> the deploy stands
    ({"error_rate": None}, "error rate unknown"),
    ({"requests": 3.0}, "error rate unknown"),
    ({"p95_latency_ms": None, "latency_ms": []}, "p95 latency unknown"),
    ({"ndcg": [0.5] * 5}, "NDCG@10 samples"),
], ids=["all-known", "error-rate", "too-few-requests", "latency", "too-few-ndcg"])
def test_a_watch_that_cannot_read_the_new_version_does_not_call_it_healthy(missing: dict, words: str | None) -> None:
    out = _watch(_Blind(**missing))
    if words is None:
        assert out["degraded"] is False, out["reasons"]
    else:
        assert out["degraded"] is True and any(words in u for u in out["unverified"]), out
        assert "could not be confirmed" in out["reasons"][0]


def test_an_ab_win_on_too_few_requests_is_inconclusive() -> None:
    from autooptimizer.loop.abtest import ABConfig, ArmStats, judge

    rng = __import__("numpy").random.default_rng(0)
    x, y = list(rng.normal(0.4, 0.1, 60)), list(rng.normal(0.7, 0.1, 60))
    lat = list(rng.normal(30, 3, 60))

    def verdict(requests: float | None) -> tuple[str, list[str]]:
        res = judge(ArmStats(model_version="a", samples=60, p95_latency_ms=40.0, error_rate=0.0, requests=200),
                    ArmStats(model_version="b", samples=60, p95_latency_ms=40.0, error_rate=0.0, requests=requests),
                    x, y, ABConfig(min_guard_requests=20), control_latency=lat, treatment_latency=lat)
        return res.verdict, res.reasons

    assert verdict(200)[0] == "pass"
    low, reasons = verdict(5)
    assert low == "inconclusive" and any("minGuardRequests" in r for r in reasons)
