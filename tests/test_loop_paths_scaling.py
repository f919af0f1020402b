"""The devops remedies at their bounds, in real cycles (tiny search service, real git, PDP, journal): a remedy that
would change nothing commits nothing, ends `no_remedy`, and alerts a human once per run of such cycles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autooptimizer.loop.cycle import CycleOptions, CycleRunner
from autooptimizer.loop.gitops import HelmPatch
from autooptimizer.loop.release import Release
from autooptimizer.testing import TinyService


def _alerts(home: Path) -> list[str]:
    path = home / "loop" / "alerts.jsonl"
    return [json.loads(line)["alertname"] for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize(("gate", "patch", "reason"), [
    ("p95_latency", HelmPatch(model_version="v-a", replicas=8, rerank_depth=10),
     "remedy exhausted: replicas at their maximum 8 and rerank depth already at its minimum 10"),
    ("cost_budget", HelmPatch(model_version="v-a", rerank_depth=10),
     "remedy exhausted: rerank depth already at its minimum 10"),
])
def test_exhausted_remedy_commits_nothing_and_escalates_once(tiny_service: TinyService, autoopt_home: Path,
                                                             gate: str, patch: HelmPatch, reason: str) -> None:
    rel = Release()
    rel.deploy(patch, "operator: at the bounds")
    head = rel.git.head()
    runner = CycleRunner()
    first = runner.run(CycleOptions(gate=gate))  # type: ignore[arg-type]
    second = runner.run(CycleOptions(gate=gate))  # type: ignore[arg-type]
    assert (first.outcome, second.outcome) == ("no_remedy", "no_remedy")
    assert first.summary["reason"] == reason and first.status == "finished"
    assert Release().git.head() == head, "no no-op commit"
    assert [s.name for s in second.steps] == ["monitor", "supervisor"]
    assert _alerts(autoopt_home).count("AutoOptRemedyExhausted") == 1


def test_latency_remedy_below_the_bound_still_applies(tiny_service: TinyService) -> None:
    Release().deploy(HelmPatch(model_version="v-a", replicas=8, rerank_depth=20), "operator: 8 replicas")
    rec = CycleRunner().run(CycleOptions(gate="p95_latency"))
    assert rec.outcome == "variant_switched" and rec.summary["reason"] == "rerank depth 20 -> 10"
    assert Release().git.read_patch() == HelmPatch(model_version="v-a", replicas=8, rerank_depth=10)


def _prom(p95_ms: float, cost_pct: float):  # noqa: ANN202
    """A Prometheus whose NDCG gate fires (50 % drop) with the given p95 and cost readings and plenty of samples."""
    from fake_prometheus import FakeProm, vector

    def answer(q: str) -> tuple[int, dict]:
        if q.startswith("floor("):
            return 200, vector(5000.0)
        if "histogram_quantile" in q:
            return 200, vector(p95_ms)
        if "feedback_ndcg10" in q:
            return 200, vector(50.0)
        return 200, vector(cost_pct)  # cost % of budget, retries

    return FakeProm(answer)


def test_an_ndcg_cycle_gives_back_the_depth_a_cost_remedy_took(tiny_service: TinyService,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The month soak's case: depth cut to 10 by the cost/latency remedies, both gates ok again, NDCG short: the
    cycle restores the model's own depth instead of retraining (when it may not: the rule's test below)."""
    from autooptimizer.search import model_store
    from autooptimizer.settings import get_settings

    own = model_store.load("v-a").rerank_depth
    Release().deploy(HelmPatch(model_version="v-a", replicas=8, rerank_depth=10), "loop: cheaper variant")
    prom = _prom(p95_ms=5.0, cost_pct=1.0)
    monkeypatch.setenv("AUTOOPT_PROMETHEUS_URL", prom.url)
    get_settings.cache_clear()
    try:
        rec = CycleRunner().run(CycleOptions(gate="ndcg_drop"))
    finally:
        prom.close()
    assert rec.outcome == "variant_switched", rec.summary
    assert rec.summary["reason"] == f"rerank depth 10 -> {own} (the model's own: latency and cost gates ok)"
    assert [s.name for s in rec.steps][-1] == "restore_variant"
    assert Release().git.read_patch() == HelmPatch(model_version="v-a", replicas=8, rerank_depth=own)


@pytest.mark.parametrize(("gates", "deployed", "restored"), [
    ({"p95_latency": "ok", "cost_budget": "ok"}, 10, 100),
    ({"p95_latency": "firing", "cost_budget": "ok"}, 10, None),
    ({"p95_latency": "ok", "cost_budget": "unknown"}, 10, None),  # unknown is not ok: the pressure may be there
    ({}, 10, None),
    ({"p95_latency": "ok", "cost_budget": "ok"}, None, None),  # no override: the model's own depth already
    ({"p95_latency": "ok", "cost_budget": "ok"}, 100, None),
])
def test_the_depth_comes_back_only_when_both_gates_read_ok(gates: dict, deployed: int | None,
                                                           restored: int | None) -> None:
    from autooptimizer.loop.remedies import restored_variant

    remedy = restored_variant(gates, deployed, 100)
    assert (remedy.args["rerank_depth"] if remedy else None) == restored
