"""Gate logic against a tiny local HTTP server that answers like Prometheus: values, NaN, errors, garbage.

No prometheus binary needed: the server speaks the /api/v1/query JSON contract, so the real
prometheus-api-client code path runs, and each answer maps to ok / firing / unknown.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fake_prometheus import FakeProm, vector
from pydantic import ValidationError
from typer.testing import CliRunner

from autooptimizer.gates import (
    GATE_NAMES,
    Evidence,
    Gate,
    GateReport,
    GateStreaks,
    evaluate_gates,
    gate_queries,
)
from autooptimizer.infra.net import free_port
from autooptimizer.profiles import load_profile
from autooptimizer.promql import query as query_metrics


@pytest.fixture
def prom() -> Iterator[FakeProm]:
    fake = FakeProm()
    yield fake
    fake.close()


def _by_name(answers: dict[str, tuple[int, object]], count: float = 1000.0):
    """Answer each gate's value query from `answers` and every sample-count query with `count`."""
    queries = {q.name: q.promql for q in gate_queries(load_profile("dev"))}
    counts = {c.promql for q in gate_queries(load_profile("dev")) for c in q.counts}

    def answer(promql: str) -> tuple[int, object]:
        for name, q in queries.items():
            if q == promql:
                return answers[name]
        if promql in counts:
            return 200, vector(count)
        return 404, {"status": "error"}

    return answer


def _all_promql(profile_name: str = "dev") -> list[str]:
    queries = gate_queries(load_profile(profile_name))
    return sorted({x for q in queries for x in [q.promql, *(c.promql for c in q.counts)]})


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
    assert sorted(prom.seen) == _all_promql()  # each query once per evaluation


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
    prom.answer = _by_name({n: (200, vector("+Inf")) for n in GATE_NAMES})  # p95 beyond the last bucket
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
    res = query_metrics("up", prom.url)
    assert res.ok and res.samples == [{"labels": {"job": "search"}, "value": 2.0}]
    prom.answer = lambda q: (200, {"status": "success", "data": {"resultType": "scalar", "result": [1.0, "7"]}})
    assert query_metrics("1+6", prom.url).samples == [{"labels": {}, "value": 7.0}]
    prom.answer = lambda q: (400, {"status": "error", "error": "parse error"})
    bad = query_metrics("up{", prom.url)
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
    from autooptimizer.tools.context import ToolContext

    prom.answer = lambda q: (200, vector(900.0))
    ctx = ToolContext(env="dev", settings=get_settings(), trace_id="t")
    out = check_quality_gates(CheckQualityGatesArgs(), ctx)
    assert out["firing"] == ["ndcg_drop", "p95_latency", "cost_budget", "retries"]
    assert query_metrics(QueryMetricsArgs(promql="up"), ctx)["samples"][0]["value"] == 900.0
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


# -- too little data reads unknown, with the counts as evidence ---------------------------------------------------
LOW_PROFILE = ("name: dev\ngates: {windowSeconds: 30, baselineWindowSeconds: 120, "
               "minSamples: {ndcgDrop: 50, p95Latency: 20, costBudget: 10, retries: 10}}\n")


def _answers(values: dict[str, object], counts: dict[tuple[str, str], object]):
    """Value per gate; count per (gate, count key). A count given as an int is a vector; a tuple is (status, body)."""
    queries = gate_queries(load_profile("dev"))
    table = {q.promql: (200, vector(values[q.name])) for q in queries}
    for q in queries:
        for c in q.counts:
            n = counts[(q.name, c.key)]
            table[c.promql] = n if isinstance(n, tuple) else (200, vector(n))
    return lambda promql: table.get(promql, (404, {"status": "error"}))


@pytest.fixture
def low(tmp_path, monkeypatch) -> None:
    (tmp_path / "dev.yaml").write_text(LOW_PROFILE)
    monkeypatch.setenv("AUTOOPT_PROFILES_DIR", str(tmp_path))


FIRING = {"ndcg_drop": 10.0, "p95_latency": 900.0, "cost_budget": 95.0, "retries": 6.0}
PLENTY = {("ndcg_drop", "current"): 60, ("ndcg_drop", "baseline"): 240, ("p95_latency", "requests"): 60,
          ("cost_budget", "requests"): 60, ("retries", "requests"): 60}


def test_the_incident_twelve_baseline_samples_read_unknown(prom: FakeProm, low) -> None:
    prom.answer = _answers(FIRING, {**PLENTY, ("ndcg_drop", "baseline"): 12})
    gate = evaluate_gates(prometheus_url=prom.url, env="dev").gate("ndcg_drop")
    assert (gate.status, gate.value) == ("unknown", None)
    assert gate.evidence.samples == {"current": 60.0, "baseline": 12.0} and gate.evidence.min_samples == 50
    assert gate.evidence.error == "12 feedback samples in the baseline window (120s), need 50 (gates.minSamples)"
    assert gate.evidence.raw[0]["value"][1] == "10.0"  # the value it would have fired on stays in the evidence


@pytest.mark.parametrize("counts, status, error", [
    ({("ndcg_drop", "current"): 49}, "unknown", "49 feedback samples in the current window (30s), need 50"),
    ({("ndcg_drop", "current"): 0, ("ndcg_drop", "baseline"): 0}, "unknown", "0 feedback samples in the current"),
    ({("ndcg_drop", "current"): 50, ("ndcg_drop", "baseline"): 50}, "firing", None),  # the minimum itself is enough
])
def test_ndcg_counts_both_windows(prom: FakeProm, low, counts, status, error) -> None:
    prom.answer = _answers(FIRING, {**PLENTY, **counts})
    gate = evaluate_gates(prometheus_url=prom.url, env="dev").gate("ndcg_drop")
    assert gate.status == status
    assert (gate.evidence.error or "").startswith(error or "")
    assert gate.evidence.samples == {"current": float(counts.get(("ndcg_drop", "current"), 60)),
                                     "baseline": float(counts.get(("ndcg_drop", "baseline"), 240))}


@pytest.mark.parametrize("requests, status", [(9, "unknown"), (10, "firing")])
def test_request_counted_gates(prom: FakeProm, low, requests: int, status: str) -> None:
    prom.answer = _answers(FIRING, {**PLENTY, ("p95_latency", "requests"): 19, ("cost_budget", "requests"): requests,
                                    ("retries", "requests"): requests})  # one query: both count the same requests
    report = evaluate_gates(prometheus_url=prom.url, env="dev")
    assert [(g.name, g.status) for g in report.gates] == [
        ("ndcg_drop", "firing"), ("p95_latency", "unknown"), ("cost_budget", status), ("retries", status)]
    assert report.gate("p95_latency").evidence.error == "19 requests in the window (30s), need 20 (gates.minSamples)"
    assert report.gate("retries").evidence.samples == report.gate("cost_budget").evidence.samples == {
        "requests": float(requests)}
    assert report.gate("retries").evidence.error == (
        None if status == "firing" else "9 requests in the window (30s), need 10 (gates.minSamples)")
    assert len(prom.seen) == 4 + 4  # four values; five counts of which two are the same query, asked once


@pytest.mark.parametrize("answer, why", [
    ((500, {"status": "error", "error": "boom"}), "could not count the requests in the window (30s)"),
    ((200, vector("NaN")), "could not count the requests in the window (30s)"),
    ((200, {"status": "success", "data": {"resultType": "vector", "result": []}}), "0 requests in the window (30s)"),
])
def test_a_count_that_cannot_be_read_means_unknown(prom: FakeProm, low, answer, why) -> None:
    prom.answer = _answers(FIRING, {**PLENTY, ("retries", "requests"): answer})
    gate = evaluate_gates(prometheus_url=prom.url, env="dev").gate("retries")
    assert gate.status == "unknown" and gate.evidence.error.startswith(why)


def test_counts_are_whole_increases_over_each_window(low) -> None:
    qs = {q.name: q for q in gate_queries(load_profile("dev"))}
    assert [c.promql for c in qs["ndcg_drop"].counts] == [
        "floor(sum(increase(autoopt_feedback_ndcg10_count[30s])))",
        "floor(sum(increase(autoopt_feedback_ndcg10_count[120s] offset 30s)))"]
    assert qs["p95_latency"].counts[0].promql == "floor(sum(increase(autoopt_search_request_seconds_count[30s])))"
    assert qs["retries"].counts[0].promql == "floor(sum(increase(autoopt_search_requests_total[30s])))"
    assert qs["retries"].promql == "max by (operation) (increase(autoopt_operation_retries_total[30s]))"
    assert qs["retries"].alert_expr == (
        "(max by (operation) (increase(autoopt_operation_retries_total[30s])) > 3) and on() "
        "(floor(sum(increase(autoopt_search_requests_total[30s]))) >= 10)")


# -- N consecutive firing readings confirm a gate ---------------------------------------------------------------
def _report(**status: str) -> GateReport:
    return GateReport(gates=[Gate(name=n, status=status.get(n, "ok"), value=None, threshold=1.0,
                                  evidence=Evidence(promql="x")) for n in GATE_NAMES])


def test_streak_confirms_only_on_the_nth_firing_reading() -> None:
    s = GateStreaks(required=3)
    assert [s.update(_report(ndcg_drop="firing")) for _ in range(3)] == [[], [], ["ndcg_drop"]]
    assert s.update(_report(ndcg_drop="firing", retries="firing")) == ["ndcg_drop"]  # retries: 1 of 3
    s.reset("ndcg_drop")
    assert s.streak == {"ndcg_drop": 0, "p95_latency": 0, "cost_budget": 0, "retries": 1}


@pytest.mark.parametrize("breaker", ["ok", "unknown"])
def test_ok_or_unknown_resets_the_streak(breaker: str) -> None:
    s = GateStreaks(required=2)
    seq = ["firing", breaker, "firing", breaker, "firing", "firing"]
    assert [s.update(_report(p95_latency=x)) for x in seq] == [[], [], [], [], [], ["p95_latency"]]
    s.update(GateReport(gates=[]))  # a gate missing from a reading is not a firing reading either
    assert s.streak["p95_latency"] == 0


def test_one_reading_is_enough_when_the_profile_says_so() -> None:
    s = GateStreaks(required=1)
    assert s.update(_report(cost_budget="firing", retries="firing")) == ["cost_budget", "retries"]
    with pytest.raises(ValidationError):
        GateStreaks(required=0)
