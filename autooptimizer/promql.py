"""The one Prometheus reader: every PromQL query in the package goes through `query()` (instant) or `query_range()`
(a time series, for the console's charts), over `prometheus-api-client`.

Callers: the quality gates (`gates.read_gate`), the metrics agent's `query_metrics` tool, the A/B guards
(`loop.signals.PrometheusGuards`), the spend fact (`tools.ml.spent_so_far`), the benchmark (`infra.bench`), the
local Prometheus's readiness polls (`infra.prometheus`) and the operator console's charts (`console`).
`active_targets()` reads scrape health with the client's own `get_targets`.

Not here, on purpose: Prometheus's admin endpoints that are not PromQL and that the client has no method for,
`GET /api/v1/rules` and `POST /-/reload` (lifecycle API), stay plain HTTP in `infra.prometheus`, which owns the
process they administer.

No client-side retries: a reading must answer within its timeout, and a failing Prometheus must read as "unknown"
(fail closed), never as a value.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from prometheus_api_client.prometheus_connect import PrometheusConnect


class QueryResult(BaseModel):
    """A PromQL answer: one sample per series (labels + value), or the error that prevented it."""

    promql: str
    ok: bool
    samples: list[dict[str, Any]] = Field(default_factory=list)
    raw: Any = None
    error: str | None = None

    def single_value(self) -> float | None:
        """The value when the answer is exactly one finite sample; None otherwise (error, no series, several, NaN)."""
        values = [s["value"] for s in self.samples] if self.ok else []
        return float(values[0]) if len(values) == 1 and math.isfinite(values[0]) else None


def connect(url: str, timeout: float) -> PrometheusConnect:
    """A `PrometheusConnect` without retries (use it as a context manager: it closes its session)."""
    # from its own module: the package resolves the name lazily (module __getattr__), which type checkers cannot see
    from prometheus_api_client.prometheus_connect import PrometheusConnect
    from urllib3.util.retry import Retry

    # the client annotates `timeout: int`; it hands it to requests, which takes float seconds
    return PrometheusConnect(url=url, retry=Retry(total=0, connect=0, read=0, status=0),
                             timeout=timeout)  # pyright: ignore[reportArgumentType]


def samples(result: Any) -> list[dict[str, Any]]:
    """Normalise the `data.result` of an instant query (vector, or scalar/string pair) to labelled samples."""
    if isinstance(result, list) and len(result) == 2 and not isinstance(result[0], dict):
        return [{"labels": {}, "value": float(result[1])}]
    out = []
    for item in result or []:
        value = item.get("value") or [None, "NaN"]
        out.append({"labels": item.get("metric", {}), "value": float(value[1])})
    return out


def _describe(exc: Exception, url: str) -> str:
    import requests

    if isinstance(exc, requests.ConnectionError | requests.Timeout):
        return f"Prometheus unreachable at {url} ({type(exc).__name__})"
    return f"{type(exc).__name__}: {str(exc)[:300]}"


def query(promql: str, url: str | None = None, timeout: float = 5.0) -> QueryResult:
    """Run one instant PromQL query (`url` default: AUTOOPT_PROMETHEUS_URL; `timeout` in seconds).
    Never raises for Prometheus trouble: connection refused, HTTP 4xx/5xx, bad JSON all come back as `ok=False` with
    the error, because they all mean "we do not know"."""
    if not url:
        from autooptimizer.settings import get_settings

        url = get_settings().prometheus_url
    try:
        with connect(url, timeout) as prom:
            raw = prom.custom_query(promql)
        return QueryResult(promql=promql, ok=True, samples=samples(raw), raw=raw)
    except Exception as exc:
        return QueryResult(promql=promql, ok=False, error=_describe(exc, url))


class RangeSeries(BaseModel):
    """One series of a range query: its labels and its (unix seconds, value) points, NaN points dropped."""

    labels: dict[str, str] = Field(default_factory=dict)
    points: list[tuple[float, float]] = Field(default_factory=list)


class RangeResult(BaseModel):
    """A range answer (`query_range`): the series, or the error that prevented them."""

    promql: str
    ok: bool
    series: list[RangeSeries] = Field(default_factory=list)
    error: str | None = None


def range_series(result: Any) -> list[RangeSeries]:
    """Normalise the `data.result` matrix of a range query (`[{"metric": {...}, "values": [[t, "v"], ...]}]`)."""
    out = []
    for item in result or []:
        points = [(float(t), float(v)) for t, v in item.get("values") or []]
        out.append(RangeSeries(labels={str(k): str(v) for k, v in (item.get("metric") or {}).items()},
                               points=[(t, v) for t, v in points if math.isfinite(v)]))
    return out


def query_range(promql: str, start: float, end: float, step_seconds: float, url: str | None = None,
                timeout: float = 5.0) -> RangeResult:
    """Run one range query from `start` to `end` (unix seconds) every `step_seconds`. Like `query`, never raises
    for Prometheus trouble: the error comes back with `ok=False`."""
    from datetime import UTC, datetime

    if not url:
        from autooptimizer.settings import get_settings

        url = get_settings().prometheus_url
    try:
        with connect(url, timeout) as prom:
            raw = prom.custom_query_range(promql, start_time=datetime.fromtimestamp(start, UTC),
                                          end_time=datetime.fromtimestamp(end, UTC), step=f"{step_seconds:g}s")
        return RangeResult(promql=promql, ok=True, series=range_series(raw))
    except Exception as exc:
        return RangeResult(promql=promql, ok=False, error=_describe(exc, url))


def active_targets(url: str, timeout: float = 2.0) -> list[dict[str, Any]] | None:
    """The targets Prometheus scrapes now (`activeTargets`: `labels`, `health`, ...); None when it cannot be read."""
    try:
        with connect(url, timeout) as prom:
            return list(prom.get_targets(state="active")["activeTargets"])
    except Exception:
        return None
