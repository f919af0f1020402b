"""The four quality gates, evaluated live against Prometheus through `autooptimizer.promql` (prometheus-api-client).

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

A gate is `unknown`, never `ok`, when Prometheus is unreachable or answers an error, the series is missing, the value
is NaN, or the reading rests on fewer samples than the profile's `gates.minSamples` (feedback in the current AND the
baseline window for ndcg_drop; requests in the window for the others): a mean of 12 feedback samples flips a 3 % drop
gate on noise alone (docs/benchmarks.md, "Gate false alarms"). Counts are `floor(sum(increase(...)))` over the
gate's window: `increase` extrapolates to the window's edges (by at most ~1.1 scrape intervals, and not below a
counter's zero), so a count is at least the increments it saw; `floor` keeps the comparison on whole samples.
Every gate carries its PromQL, the raw answer and the counts as evidence. The same expressions feed the recording and
alert rules (`autooptimizer.infra.prometheus`; an alert also needs the counts), so rules and gates agree.

A single firing reading is not a decision: `GateStreaks` confirms a gate after `gates.consecutiveReadings` firing
readings in a row, and only a confirmed gate starts a cycle (`autooptimizer.loop.scheduler`).
"""

from __future__ import annotations

import math
import time
from typing import Any, Literal

from pydantic import BaseModel, Field

from autooptimizer.profiles import Profile, load_profile
from autooptimizer.promql import QueryResult, query
from autooptimizer.search import metric_names as m

GateName = Literal["ndcg_drop", "p95_latency", "cost_budget", "retries"]
GateStatus = Literal["ok", "firing", "unknown"]
GATE_NAMES: tuple[GateName, ...] = ("ndcg_drop", "p95_latency", "cost_budget", "retries")


class SampleCount(BaseModel):
    """A count a gate's reading rests on (feedback or requests in one window), and the minimum the profile sets."""

    key: str = Field(description="short name in evidence.samples: current | baseline | requests")
    what: str = Field(description="for messages, e.g. 'feedback samples in the baseline window (120s)'")
    promql: str
    minimum: int = Field(ge=1)


class GateQuery(BaseModel):
    """One gate's definition: the PromQL giving its value, the comparison that makes it fire, the counts it needs."""

    name: GateName
    promql: str
    threshold: float
    op: Literal[">", ">="]
    unit: str
    record: str = Field(description="recording-rule name that stores the value in Prometheus")
    alert: str = Field(description="alert-rule name that fires with the gate")
    summary: str
    counts: list[SampleCount] = Field(default_factory=list)

    @property
    def alert_expr(self) -> str:
        """The alert rule: the gate's comparison, and every count at its minimum (as the gate judges)."""
        enough = "".join(f" and on() ({c.promql} >= {c.minimum})" for c in self.counts)
        return f"({self.promql} {self.op} {self.threshold:g}){enough}"


class Evidence(BaseModel):
    promql: str
    raw: Any = Field(default=None, description="the result list Prometheus returned (or null)")
    error: str | None = None
    samples: dict[str, float | None] = Field(default_factory=dict,
                                             description="count per window (current/baseline/requests); null = "
                                                         "Prometheus could not answer")
    min_samples: int | None = Field(default=None, description="the profile's minimum for this gate")


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


def _count(key: str, what: str, promql: str, minimum: int) -> SampleCount:
    return SampleCount(key=key, what=what, promql=f"floor(sum(increase({promql})))", minimum=minimum)


def gate_queries(profile: Profile) -> list[GateQuery]:
    """The four gates' PromQL and thresholds for an environment profile (single source for gates and rules)."""
    g = profile.gates
    w, b = f"{g.window_seconds}s", f"{g.baseline_window_seconds}s"
    low = g.min_samples
    requests = f"requests in the window ({w})"
    fb_now = _count("current", f"feedback samples in the current window ({w})", f"{m.FEEDBACK_NDCG}_count[{w}]",
                    low.ndcg_drop)
    fb_base = _count("baseline", f"feedback samples in the baseline window ({b})",
                     f"{m.FEEDBACK_NDCG}_count[{b}] offset {w}", low.ndcg_drop)
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
            counts=[fb_now, fb_base],
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
            counts=[_count("requests", requests, f"{m.REQUEST_SECONDS}_count[{w}]", low.p95_latency)],
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
            counts=[_count("requests", requests, f"{m.REQUESTS_TOTAL}[{w}]", low.cost_budget)],
        ),
        GateQuery(
            name="retries",
            # The service exports the counter at 0 for every operation from start-up (search/service_metrics.py),
            # so a missing series means a broken exporter or scrape (unknown), never "no retries".
            promql=f"max by (operation) (increase({m.RETRIES_TOTAL}[{w}]))",
            threshold=float(g.max_retries),
            op=">",
            unit="retries",
            record="autoopt:operation_retries:max",
            alert="AutoOptRetries",
            summary=f"an operation retried more than {g.max_retries} times within {w}",
            counts=[_count("requests", requests, f"{m.REQUESTS_TOTAL}[{w}]", low.retries)],
        ),
    ]


def _counted(res: QueryResult) -> float | None:
    """A count query's value: None when Prometheus could not answer or answered a non-finite number; 0 when no series
    had two samples in the window (`increase` needs two, so nothing countable happened)."""
    if not res.ok:
        return None
    values = [s["value"] for s in res.samples]
    if not all(math.isfinite(v) for v in values):
        return None
    return float(sum(values))


def too_few(q: GateQuery, counts: dict[str, float | None]) -> str | None:
    """Why the counts cannot carry a decision (e.g. '12 feedback samples in the baseline window (120s), need 100'),
    or None when every count reaches its minimum. A count below its minimum is named before one that could not be
    read."""
    short = [(c, n) for c in q.counts if (n := counts.get(c.key)) is not None and n < c.minimum]
    if short:
        c, n = short[0]
        return f"{n:.0f} {c.what}, need {c.minimum} (gates.minSamples)"
    missing = [c for c in q.counts if counts.get(c.key) is None]
    if missing:
        return f"could not count the {missing[0].what}: Prometheus gave no finite answer"
    return None


def _judge(q: GateQuery, res: QueryResult, counts: dict[str, float | None] | None = None) -> Gate:
    """ok | firing | unknown for one gate from its value answer and its counts (`counts` None: not checked).
    Order of the reasons for unknown: Prometheus error, no series, too few samples, NaN value, uncountable."""
    ev = Evidence(promql=q.promql, raw=res.raw, error=res.error, samples=counts or {},
                  min_samples=q.counts[0].minimum if q.counts else None)
    unknown = Gate(name=q.name, status="unknown", value=None, threshold=q.threshold, unit=q.unit, evidence=ev)
    if not res.ok:
        return unknown
    if not res.samples:
        ev.error = "no series: the metric is missing or had no samples in the window"
        return unknown
    why = too_few(q, counts) if counts is not None else None
    if why and not why.startswith("could not"):
        ev.error = why
        return unknown
    values = [s["value"] for s in res.samples if not math.isnan(s["value"])]
    if not values:
        ev.error = "NaN: no data in the window to compute the value"
        return unknown
    if why:
        ev.error = why
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


def read_gate(q: GateQuery, url: str | None = None, timeout: float = 5.0, check_counts: bool = True,
              counted: dict[str, float | None] | None = None) -> Gate:
    """One gate now: its value query, then its count queries (same client path). `counted` (promql -> count) shares
    counts between the gates of one evaluation (cost and retries count the same requests). `check_counts=False`
    judges the value alone but still records the counts (the A/A bench compares both rules on one reading)."""
    counted = {} if counted is None else counted
    res = query(q.promql, url, timeout)
    for c in q.counts:
        if c.promql not in counted:
            counted[c.promql] = _counted(query(c.promql, url, timeout))
    counts = {c.key: counted[c.promql] for c in q.counts}
    if check_counts:
        return _judge(q, res, counts)
    gate = _judge(q, res, None)
    gate.evidence.samples = counts
    return gate


def evaluate_gates(
    prometheus_url: str | None = None, env: str | None = None, profile: Profile | None = None, timeout: float = 5.0
) -> GateReport:
    """Evaluate all four gates now. Thresholds and windows come from the environment profile."""
    from autooptimizer.settings import get_settings

    settings = get_settings()
    env = env or settings.env
    profile = profile or load_profile(env)
    url = prometheus_url or settings.prometheus_url
    counted: dict[str, float | None] = {}
    gates = [read_gate(q, url, timeout, counted=counted) for q in gate_queries(profile)]
    return GateReport(gates=gates, env=env, prometheus_url=url)


class GateStreaks(BaseModel):
    """Consecutive firing readings per gate. A gate is confirmed once it has fired on `required` readings in a row;
    an `ok` or `unknown` reading (or a gate missing from a report) resets its streak to 0. Same rule as Flagger's
    `threshold` and Argo Rollouts' `failureLimit`: one noisy reading must not start a retrain."""

    required: int = Field(ge=1)
    streak: dict[str, int] = Field(default_factory=lambda: {name: 0 for name in GATE_NAMES})

    def update(self, report: GateReport) -> list[GateName]:
        """Count one reading; returns the confirmed gates (streak >= required), in GATE_NAMES order."""
        status = {g.name: g.status for g in report.gates}
        for name in GATE_NAMES:
            self.streak[name] = self.streak.get(name, 0) + 1 if status.get(name) == "firing" else 0
        return self.confirmed()

    def confirmed(self) -> list[GateName]:
        return [name for name in GATE_NAMES if self.streak.get(name, 0) >= self.required]

    def reset(self, name: str | None = None) -> None:
        """Start counting again (after a cycle was started for `name`, or for every gate)."""
        for key in [name] if name else list(self.streak):
            self.streak[key] = 0
