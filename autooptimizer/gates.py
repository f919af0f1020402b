"""The four quality gates, evaluated live against Prometheus with `prometheus-api-client`.

| gate          | value (PromQL below)                                      | fires when        |
|---------------|-----------------------------------------------------------|-------------------|
| `ndcg_drop`   | % drop of online NDCG@10 (window W) vs the baseline window | value >= ndcgDropPct |
| `p95_latency` | p95 of /search latency over W, in ms                      | value > p95LatencyMs |
| `cost_budget` | spend rate over W, projected to an hour, as % of budget   | value > costBudgetPct |
| `retries`     | retries per operation within W (max over operations)      | value > maxRetries |

NDCG baseline: the mean online NDCG@10 over the `baselineWindowSeconds` that END where the current window starts
(`offset W`). It needs no stored state, works on any Prometheus that scraped the service, and compares "now" with
"just before now": a corpus shift drops the current window below the earlier one within seconds. A shift that lasts
longer than W + baseline becomes the new baseline; the loop acts on the firing edge, long before that.

The budget in the profile (`cost.budget`, dollars) is a budget per hour of serving: a burn-rate gate can go back to ok
once an overrun stops, which a cumulative total never could.

A gate is `unknown`, never `ok`, when Prometheus is unreachable or answers an error, the series is missing (e.g. no
traffic or no feedback in the window) or the value is NaN. Every gate carries its PromQL and the raw answer as evidence.
The same expressions feed the recording and alert rules (`autooptimizer.infra.prometheus`), so rules and gates agree.
"""

from __future__ import annotations

import math
import time
from typing import Any, Literal

from pydantic import BaseModel, Field

from autooptimizer.profiles import Profile, load_profile
from autooptimizer.search import metric_names as m

GateName = Literal["ndcg_drop", "p95_latency", "cost_budget", "retries"]
GateStatus = Literal["ok", "firing", "unknown"]
GATE_NAMES: tuple[GateName, ...] = ("ndcg_drop", "p95_latency", "cost_budget", "retries")


class GateQuery(BaseModel):
    """One gate's definition: the PromQL giving its value and the comparison that makes it fire."""

    name: GateName
    promql: str
    threshold: float
    op: Literal[">", ">="]
    unit: str
    record: str = Field(description="recording-rule name that stores the value in Prometheus")
    alert: str = Field(description="alert-rule name that fires with the gate")
    summary: str


class Evidence(BaseModel):
    promql: str
    raw: Any = Field(default=None, description="the result list Prometheus returned (or null)")
    error: str | None = None


class Gate(BaseModel):
    name: GateName
    status: GateStatus
    value: float | None = Field(description="the gate's value; null when unknown or not finite")
    threshold: float
    unit: str = ""
    evidence: Evidence


class GateReport(BaseModel):
    gates: list[Gate]
    env: str = "dev"
    prometheus_url: str = ""
    evaluated_at: float = Field(default_factory=time.time)

    def gate(self, name: str) -> Gate:
        for g in self.gates:
            if g.name == name:
                return g
        raise KeyError(name)

    @property
    def firing(self) -> list[str]:
        return [g.name for g in self.gates if g.status == "firing"]

    def public(self) -> dict[str, Any]:
        """The `autoopt gates --json` shape: {"gates": [{name, status, value, threshold, evidence}]}."""
        return {
            "gates": [g.model_dump(include={"name", "status", "value", "threshold", "evidence"}) for g in self.gates]
        }


class QueryResult(BaseModel):
    """A PromQL answer: one sample per series (labels + value), or the error that prevented it."""

    promql: str
    ok: bool
    samples: list[dict[str, Any]] = Field(default_factory=list)
    raw: Any = None
    error: str | None = None


def gate_queries(profile: Profile) -> list[GateQuery]:
    """The four gates' PromQL and thresholds for an environment profile (single source for gates and rules)."""
    g = profile.gates
    w, b = f"{g.window_seconds}s", f"{g.baseline_window_seconds}s"
    ndcg_now = f"sum(rate({m.FEEDBACK_NDCG}_sum[{w}])) / sum(rate({m.FEEDBACK_NDCG}_count[{w}]))"
    ndcg_base = (
        f"sum(rate({m.FEEDBACK_NDCG}_sum[{b}] offset {w})) / sum(rate({m.FEEDBACK_NDCG}_count[{b}] offset {w}))"
    )
    return [
        GateQuery(
            name="ndcg_drop",
            promql=f"100 * (1 - ({ndcg_now}) / ({ndcg_base}))",
            threshold=g.ndcg_drop_pct,
            op=">=",
            unit="% drop",
            record="autoopt:ndcg10_drop:percent",
            alert="AutoOptNdcgDrop",
            summary=f"online NDCG@10 over {w} is >= {g.ndcg_drop_pct}% below the {b} before it",
        ),
        GateQuery(
            name="p95_latency",
            promql=f"1000 * histogram_quantile(0.95, sum by (le) (rate({m.REQUEST_SECONDS}_bucket[{w}])))",
            threshold=g.p95_latency_ms,
            op=">",
            unit="ms",
            record="autoopt:search_latency_p95:ms",
            alert="AutoOptLatencyP95",
            summary=f"p95 search latency over {w} above {g.p95_latency_ms:g} ms",
        ),
        GateQuery(
            name="cost_budget",
            promql=f"100 * 3600 * sum(rate({m.COST_TOTAL}[{w}])) / {profile.cost.budget:g}",
            threshold=g.cost_budget_pct,
            op=">",
            unit="% of hourly budget",
            record="autoopt:cost_budget:percent",
            alert="AutoOptCostBudget",
            summary=f"spend rate over {w} above {g.cost_budget_pct:g}% of the {profile.cost.budget:g}/h budget",
        ),
        GateQuery(
            name="retries",
            # prometheus_client exports a labelled counter only once an operation has retried, so "no retry series
            # while the service reports requests in the window" is a true zero; with no requests either: unknown.
            promql=(
                f"max by (operation) (increase({m.RETRIES_TOTAL}[{w}]))"
                f" or on() (0 * sum(rate({m.REQUESTS_TOTAL}[{w}])))"
            ),
            threshold=float(g.max_retries),
            op=">",
            unit="retries",
            record="autoopt:operation_retries:max",
            alert="AutoOptRetries",
            summary=f"an operation retried more than {g.max_retries} times within {w}",
        ),
    ]


def _connect(url: str, timeout: float) -> Any:
    from prometheus_api_client import PrometheusConnect
    from urllib3.util.retry import Retry

    # No client-side retries: a gate must answer within its timeout, and a failing Prometheus means `unknown`.
    return PrometheusConnect(url=url, retry=Retry(total=0, connect=0, read=0, status=0), timeout=timeout)


def _samples(result: Any) -> list[dict[str, Any]]:
    """Normalise the `data.result` of an instant query (vector, or scalar/string pair) to labelled samples."""
    if isinstance(result, list) and len(result) == 2 and not isinstance(result[0], dict):
        return [{"labels": {}, "value": float(result[1])}]
    out = []
    for item in result or []:
        value = item.get("value") or [None, "NaN"]
        out.append({"labels": item.get("metric", {}), "value": float(value[1])})
    return out


def query_metrics(promql: str, prometheus_url: str | None = None, timeout: float = 5.0) -> QueryResult:
    """Run one instant PromQL query. Never raises for Prometheus trouble: the error is in the result."""
    from autooptimizer.settings import get_settings

    url = prometheus_url or get_settings().prometheus_url
    try:
        with _connect(url, timeout) as prom:
            raw = prom.custom_query(promql)
        return QueryResult(promql=promql, ok=True, samples=_samples(raw), raw=raw)
    except Exception as exc:  # connection refused, HTTP 4xx/5xx, bad JSON: all mean "we do not know"
        import requests

        if isinstance(exc, requests.ConnectionError | requests.Timeout):
            error = f"Prometheus unreachable at {url} ({type(exc).__name__})"
        else:
            error = f"{type(exc).__name__}: {str(exc)[:300]}"
        return QueryResult(promql=promql, ok=False, error=error)


def _judge(q: GateQuery, res: QueryResult) -> Gate:
    ev = Evidence(promql=q.promql, raw=res.raw, error=res.error)
    unknown = Gate(name=q.name, status="unknown", value=None, threshold=q.threshold, unit=q.unit, evidence=ev)
    if not res.ok:
        return unknown
    values = [s["value"] for s in res.samples if not math.isnan(s["value"])]
    if not res.samples:
        ev.error = "no series: the metric is missing or had no samples in the window"
        return unknown
    if not values:
        ev.error = "NaN: no data in the window to compute the value"
        return unknown
    value = max(values)
    fires = value >= q.threshold if q.op == ">=" else value > q.threshold
    return Gate(
        name=q.name,
        status="firing" if fires else "ok",
        value=value if math.isfinite(value) else None,
        threshold=q.threshold,
        unit=q.unit,
        evidence=ev,
    )


def evaluate_gates(
    prometheus_url: str | None = None, env: str | None = None, profile: Profile | None = None, timeout: float = 5.0
) -> GateReport:
    """Evaluate all four gates now. Thresholds and windows come from the environment profile."""
    from autooptimizer.settings import get_settings

    settings = get_settings()
    env = env or settings.env
    profile = profile or load_profile(env)
    url = prometheus_url or settings.prometheus_url
    gates = [_judge(q, query_metrics(q.promql, url, timeout)) for q in gate_queries(profile)]
    return GateReport(gates=gates, env=env, prometheus_url=url)
