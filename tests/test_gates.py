"""Gate logic against a tiny local HTTP server that answers like Prometheus: values, NaN, errors, garbage.

No prometheus binary needed: the server speaks the /api/v1/query JSON contract, so the real
prometheus-api-client code path runs, and each answer maps to ok / firing / unknown.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fake_prometheus import FakeProm, vector
from typer.testing import CliRunner

from autooptimizer.gates import GATE_NAMES, evaluate_gates, gate_queries, query_metrics
from autooptimizer.infra.net import free_port
from autooptimizer.profiles import load_profile


@pytest.fixture
def prom() -> Iterator[FakeProm]:
    fake = FakeProm()
    yield fake
    fake.close()


def _by_name(answers: dict[str, tuple[int, object]]):
    queries = {q.name: q.promql for q in gate_queries(load_profile("dev"))}

    def answer(promql: str) -> tuple[int, object]:
        for name, q in queries.items():
            if q == promql:
                return answers[name]
        return 404, {"status": "error"}

    return answer


def test_values_against_thresholds(prom: FakeProm) -> None:
    prom.answer = _by_name({
        "ndcg_drop": (200, vector(3.0)),  # >= 3 % fires
        "p95_latency": (200, vector(800.0)),  # > 800 ms needed: exactly 800 is ok
        "cost_budget": (200, vector(80.5)),
        "retries": (200, vector(1, 4, labels=[{"operation": "bm25"}, {"operation": "rerank"}])),
    })
    report = evaluate_gates(prometheus_url=prom.url, env="dev")
    status = {g.name: (g.status, g.value) for g in report.gates}
    assert status == {"ndcg_drop": ("firing", 3.0), "p95_latency": ("ok", 800.0), "cost_budget": ("firing", 80.5),
                      "retries": ("firing", 4.0)}
    assert report.firing == ["ndcg_drop", "cost_budget", "retries"]
    retries = report.gate("retries")
    assert retries.threshold == 3 and retries.evidence.raw[1]["metric"] == {"operation": "rerank"}
    assert sorted(prom.seen) == sorted(q.promql for q in gate_queries(load_profile("dev")))


def test_nan_means_unknown(prom: FakeProm) -> None:
    prom.answer = lambda q: (200, vector("NaN"))
    report = evaluate_gates(prometheus_url=prom.url)
    assert [g.status for g in report.gates] == ["unknown"] * 4
    assert all(g.value is None and "NaN" in g.evidence.error for g in report.gates)


@pytest.mark.parametrize("status, body", [
    (500, {"status": "error", "errorType": "internal", "error": "boom"}),
    (503, b"Service Unavailable"),
    (400, {"status": "error", "errorType": "bad_data", "error": "parse error"}),
    (422, {"status": "error", "errorType": "execution", "error": "query timed out"}),
    (200, b"<html>not json</html>"),
])
def test_error_responses_mean_unknown(prom: FakeProm, status: int, body: object) -> None:
    prom.answer = lambda q: (status, body)
    report = evaluate_gates(prometheus_url=prom.url)
    assert [g.status for g in report.gates] == ["unknown"] * 4
    for g in report.gates:
        assert g.value is None and g.evidence.error and g.evidence.promql


def test_missing_series_means_unknown(prom: FakeProm) -> None:
    prom.answer = lambda q: (200, {"status": "success", "data": {"resultType": "vector", "result": []}})
    report = evaluate_gates(prometheus_url=prom.url)
    assert [g.status for g in report.gates] == ["unknown"] * 4
    assert all("no series" in g.evidence.error for g in report.gates)


def test_unreachable_prometheus_means_unknown() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    report = evaluate_gates(prometheus_url=url)
    assert [g.status for g in report.gates] == ["unknown"] * 4
    assert all("unreachable" in g.evidence.error for g in report.gates)


def test_inf_latency_fires_with_null_value(prom: FakeProm) -> None:
    prom.answer = lambda q: (200, vector("+Inf"))  # p95 beyond the last histogram bucket
    gate = evaluate_gates(prometheus_url=prom.url).gate("p95_latency")
    assert gate.status == "firing" and gate.value is None
    json.dumps(evaluate_gates(prometheus_url=prom.url).public())  # serialisable


def test_thresholds_and_windows_come_from_the_profile(tmp_path, monkeypatch) -> None:
    (tmp_path / "staging.yaml").write_text(
        "name: staging\ngates: {ndcgDropPct: 5, p95LatencyMs: 250, costBudgetPct: 50, maxRetries: 7,"
        " windowSeconds: 12, baselineWindowSeconds: 60}\ncost: {budget: 2.5}\n"
    )
    monkeypatch.setenv("AUTOOPT_PROFILES_DIR", str(tmp_path))
    qs = {q.name: q for q in gate_queries(load_profile("staging"))}
    assert [qs[n].threshold for n in GATE_NAMES] == [5, 250, 50, 7]
    assert "[12s]" in qs["ndcg_drop"].promql and "[60s] offset 12s" in qs["ndcg_drop"].promql
    assert "/ 2.5" in qs["cost_budget"].promql and "[12s]" in qs["p95_latency"].promql


def test_query_metrics_helper(prom: FakeProm) -> None:
    prom.answer = lambda q: (200, vector(2, labels=[{"job": "search"}]))
    res = query_metrics("up", prometheus_url=prom.url)
    assert res.ok and res.samples == [{"labels": {"job": "search"}, "value": 2.0}]
    prom.answer = lambda q: (200, {"status": "success", "data": {"resultType": "scalar", "result": [1.0, "7"]}})
    assert query_metrics("1+6", prometheus_url=prom.url).samples == [{"labels": {}, "value": 7.0}]
    prom.answer = lambda q: (400, {"status": "error", "error": "parse error"})
    bad = query_metrics("up{", prometheus_url=prom.url)
    assert not bad.ok and "400" in bad.error


def test_cli_gates_json(prom: FakeProm, monkeypatch) -> None:
    from autooptimizer.cli import app

    prom.answer = _by_name({"ndcg_drop": (200, vector(10.0)), "p95_latency": (200, vector(120.0)),
                            "cost_budget": (500, {"status": "error"}), "retries": (200, vector("NaN"))})
    out = CliRunner().invoke(app, ["gates", "--json", "--prometheus-url", prom.url, "--env", "dev"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert [(g["name"], g["status"]) for g in doc["gates"]] == [
        ("ndcg_drop", "firing"), ("p95_latency", "ok"), ("cost_budget", "unknown"), ("retries", "unknown")]
    assert set(doc["gates"][0]) == {"name", "status", "value", "threshold", "evidence"}
    assert set(doc["gates"][0]["evidence"]) >= {"promql", "raw"}
    table = CliRunner().invoke(app, ["gates", "--prometheus-url", prom.url])
    assert table.exit_code == 0 and "firing" in table.output


def test_metrics_tools(prom: FakeProm, monkeypatch) -> None:
    from autooptimizer.settings import get_settings
    from autooptimizer.tools.metrics import CheckQualityGatesArgs, QueryMetricsArgs, check_quality_gates, query_metrics

    monkeypatch.setenv("AUTOOPT_PROMETHEUS_URL", prom.url)
    get_settings.cache_clear()
    prom.answer = lambda q: (200, vector(900.0))
    out = check_quality_gates(CheckQualityGatesArgs())
    assert out["firing"] == ["ndcg_drop", "p95_latency", "cost_budget", "retries"]
    assert query_metrics(QueryMetricsArgs(promql="up"))["samples"][0]["value"] == 900.0
    assert query_metrics.tool_spec.owner == "metrics" and query_metrics.tool_spec.risk == "read"
    assert check_quality_gates.tool_spec.risk == "read"


def test_metrics_tools_through_the_policy_gate(prom: FakeProm, monkeypatch) -> None:
    from autooptimizer.settings import get_settings
    from autooptimizer.tools import load_all_tools

    monkeypatch.setenv("AUTOOPT_PROMETHEUS_URL", prom.url)
    get_settings.cache_clear()
    prom.answer = lambda q: (200, vector("NaN"))
    registry = load_all_tools()
    res = registry.call("metrics", "check_quality_gates", {"env": "dev"})
    assert res.decision == "permit" and res.executed
    assert [g["status"] for g in res.result["gates"]] == ["unknown"] * 4
    denied = registry.call("data", "query_metrics", {"promql": "up"})  # not the owner
    assert denied.decision == "deny" and not denied.executed
