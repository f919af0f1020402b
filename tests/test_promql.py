"""The one PromQL reader against a local server that answers like Prometheus; and that nothing else in the package
reads PromQL (the live binary is exercised through it in test_infra_prometheus and test_gates_live)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_prometheus import FakeProm, vector

from autooptimizer.infra.net import free_port
from autooptimizer.promql import active_targets, query, query_range


@pytest.fixture
def prom() -> Iterator[FakeProm]:
    fake = FakeProm()
    yield fake
    fake.close()


def test_samples_of_a_vector_and_a_scalar(prom: FakeProm) -> None:
    prom.answer = lambda q: (200, vector(2, 5, labels=[{"job": "search"}, {"job": "api"}]))
    res = query("up", prom.url)
    assert res.ok and res.samples == [{"labels": {"job": "search"}, "value": 2.0},
                                      {"labels": {"job": "api"}, "value": 5.0}]
    assert res.raw[1]["metric"] == {"job": "api"} and res.single_value() is None  # two series: no single value
    prom.answer = lambda q: (200, {"status": "success", "data": {"resultType": "scalar", "result": [1.0, "7"]}})
    assert query("1+6", prom.url).single_value() == 7.0
    assert prom.seen == ["up", "1+6"]


@pytest.mark.parametrize("answer", [(200, vector("NaN")), (200, vector("+Inf")),
                                    (200, {"status": "success", "data": {"resultType": "vector", "result": []}})])
def test_no_single_finite_value_reads_none(prom: FakeProm, answer) -> None:
    prom.answer = lambda q: answer
    res = query("x", prom.url)
    assert res.ok and res.error is None and res.single_value() is None


@pytest.mark.parametrize("status, body, words", [
    (400, {"status": "error", "errorType": "bad_data", "error": "parse error"}, "400"),
    (503, b"Service Unavailable", "503"),
    (200, b"<html>not json</html>", "JSONDecodeError"),
])
def test_errors_come_back_in_the_result_after_one_try(prom: FakeProm, status, body, words) -> None:
    prom.answer = lambda q: (status, body)
    res = query("up{", prom.url)
    assert not res.ok and words in res.error and res.samples == [] and res.single_value() is None
    assert prom.seen == ["up{"]  # no client-side retry, even on a 503


def test_unreachable_is_an_error_not_an_exception() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    res = query("up", url, timeout=1.0)
    assert not res.ok and res.error == f"Prometheus unreachable at {url} (ConnectionError)"
    assert active_targets(url, timeout=1.0) is None


def test_the_configured_prometheus_by_default(prom: FakeProm, monkeypatch) -> None:
    from autooptimizer.settings import get_settings

    monkeypatch.setenv("AUTOOPT_PROMETHEUS_URL", prom.url)
    get_settings.cache_clear()
    prom.answer = lambda q: (200, vector(3))
    assert query("sum(x)").single_value() == 3.0 and prom.seen == ["sum(x)"]


def test_active_targets(prom: FakeProm) -> None:
    target = {"labels": {"job": "search", "instance": "127.0.0.1:1"}, "health": "up"}
    prom.answer = lambda q: (200, {"status": "success", "data": {"activeTargets": [target], "droppedTargets": []}})
    assert active_targets(prom.url) == [target]
    prom.answer = lambda q: (500, {"status": "error"})
    assert active_targets(prom.url) is None


def _matrix(*series: tuple[dict, list]) -> dict:
    return {"status": "success", "data": {"resultType": "matrix",
                                          "result": [{"metric": m, "values": v} for m, v in series]}}


def test_range_series_keep_labels_and_drop_nan_points(prom: FakeProm) -> None:
    prom.answer = lambda q: (200, _matrix(({"model_version": "v1"}, [[100, "0.5"], [130, "NaN"], [160, "0.7"]]),
                                          ({"model_version": "v2"}, [[100, "+Inf"]])))
    res = query_range("ndcg", 100.0, 160.0, 30.0, url=prom.url)
    assert res.ok and prom.seen == ["ndcg"]
    assert [(s.labels, s.points) for s in res.series] == [({"model_version": "v1"}, [(100.0, 0.5), (160.0, 0.7)]),
                                                          ({"model_version": "v2"}, [])]


def test_range_errors_come_back_in_the_result() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    res = query_range("up", 0.0, 60.0, 15.0, url=url, timeout=1.0)
    assert not res.ok and res.series == [] and res.error == f"Prometheus unreachable at {url} (ConnectionError)"


# ---- one source: nothing else in the package speaks to Prometheus's query API ------------------------------------
PACKAGE = Path(__file__).resolve().parents[1] / "autooptimizer"


def _code_strings_and_names(tree: ast.AST) -> set[str]:
    """String constants outside docstrings, and every name/attribute used: what the module's code can call."""
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and n.body
            and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    out = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs:
            out.add(n.value)
        elif isinstance(n, ast.Name):
            out.add(n.id)
        elif isinstance(n, ast.Attribute):
            out.add(n.attr)
        elif isinstance(n, ast.alias):
            out.add(n.name)
    return out


def test_only_the_promql_module_reads_promql() -> None:
    readers = []
    for path in sorted(PACKAGE.rglob("*.py")):
        found = _code_strings_and_names(ast.parse(path.read_text()))
        if any("api/v1/query" in s for s in found) or found & {"custom_query", "custom_query_range",
                                                                "PrometheusConnect", "prometheus_api_client"}:
            readers.append(path.relative_to(PACKAGE).as_posix())
    assert readers == ["promql.py"]
