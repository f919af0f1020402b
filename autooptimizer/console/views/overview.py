"""The overview: the four gates live, per-version charts, the kill switch, the current cycle and the last cycles.

Same sources as `autoopt gates`, `autoopt history` and `GET /api/v1/optimizer/status`: `evaluate_gates` (Prometheus
through autooptimizer.promql), the cycle journal and the kill-switch file. A gate that cannot be read is `unknown`
here too, with the reason, never `ok`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from autooptimizer.console.charts import LinePlot
from autooptimizer.loop.journal import CycleRecord, Journal
from autooptimizer.settings import Settings

if TYPE_CHECKING:
    from autooptimizer.gates import AnchorEvidence

CHART_SECONDS = 3600.0  # the charts show the last hour
CHART_STEP_SECONDS = 30.0  # one point per 30 s: 120 points per series
GATE_TIMEOUT_S = 2.0  # a page must not hang on an unreachable Prometheus (unknown, with the reason)


class GateView(BaseModel):
    """One gate as the overview draws it; `evidence` is the text shown on hover (PromQL, counts, error)."""

    name: str
    status: str
    value: float | None
    threshold: float
    unit: str
    op: str
    summary: str
    promql: str
    error: str | None = None
    samples: dict[str, float | None] = Field(default_factory=dict)
    min_samples: int | None = None
    anchor: str | None = Field(default=None, description="ndcg_drop: the anchor note and which comparison fired")

    @property
    def evidence(self) -> str:
        counts = ", ".join(f"{k}={'?' if v is None else f'{v:.0f}'}" for k, v in self.samples.items())
        parts = [f"PromQL: {self.promql}", f"fires when value {self.op} {self.threshold:g} {self.unit}"]
        if counts:
            parts.append(f"samples: {counts} (minimum {self.min_samples})")
        if self.error:
            parts.append(f"why unknown: {self.error}")
        if self.anchor:
            parts.append(f"anchor: {self.anchor}")
        return "\n".join(parts)


class GatesView(BaseModel):
    env: str
    prometheus_url: str
    evaluated_at: float
    gates: list[GateView]
    error: str | None = None


def read_gates(settings: Settings) -> GatesView:
    """The four gates now (each `unknown` with its reason when Prometheus or the profile cannot be read)."""
    from autooptimizer.errors import AutoOptError
    from autooptimizer.gates import evaluate_gates, gate_queries
    from autooptimizer.profiles import load_profile

    try:
        profile = load_profile(settings.env)
    except AutoOptError as exc:
        return GatesView(env=settings.env, prometheus_url=settings.prometheus_url, evaluated_at=time.time(),
                         gates=[], error=f"{exc.problem} {exc.fix}")
    queries = {q.name: q for q in gate_queries(profile)}
    from autooptimizer.loop.anchor import AnchorStore

    report = evaluate_gates(prometheus_url=settings.prometheus_url, env=settings.env, profile=profile,
                            timeout=GATE_TIMEOUT_S, anchor=AnchorStore.for_settings(settings).read())
    views = [GateView(name=g.name, status=g.status, value=g.value, threshold=g.threshold, unit=g.unit,
                      op=queries[g.name].op, summary=queries[g.name].summary, promql=g.evidence.promql,
                      error=g.evidence.error, samples=g.evidence.samples, min_samples=g.evidence.min_samples,
                      anchor=_anchor_line(g.evidence.anchor))
             for g in report.gates]
    return GatesView(env=report.env, prometheus_url=report.prometheus_url, evaluated_at=report.evaluated_at,
                     gates=views)


def _anchor_line(ev: AnchorEvidence | None) -> str | None:
    """'sliding 1.2 %, anchored 46.0 % (fired: anchor); anchored at ...' for the hover text."""
    if ev is None:
        return None
    drops = [f"{k} {v:.1f} %" for k, v in (("sliding", ev.sliding_drop), ("anchored", ev.anchored_drop))
             if v is not None]
    fired = f" (fired: {', '.join(ev.fired_by)})" if ev.fired_by else ""
    return f"{', '.join(drops)}{fired}; {ev.note}" if drops else ev.note


class CycleRow(BaseModel):
    """One line of the history table (what `autoopt history` prints)."""

    id: str
    status: str
    outcome: str | None
    gate: str | None
    trigger: str | None
    env: str | None
    started_at: float
    duration_seconds: float | None
    reason: str | None

    @classmethod
    def of(cls, rec: CycleRecord) -> CycleRow:
        return cls(id=rec.id, status=rec.status, outcome=rec.outcome, gate=rec.gate, trigger=rec.trigger,
                   env=rec.env, started_at=rec.started_at, duration_seconds=rec.duration_seconds,
                   reason=(rec.summary or {}).get("reason") or rec.error)


class StepRow(BaseModel):
    name: str
    status: str
    started_at: float
    seconds: float | None


class RunningCycle(BaseModel):
    """A cycle the journal shows running (in this process or any other), with its live steps."""

    row: CycleRow
    steps: list[StepRow]


def running_cycles(settings: Settings) -> list[RunningCycle]:
    now = time.time()
    return [RunningCycle(row=CycleRow.of(rec), steps=[
        StepRow(name=s.name, status=s.status, started_at=s.started_at,
                seconds=round((s.finished_at or now) - s.started_at, 1)) for s in rec.steps])
        for rec in Journal(settings).running()]


def recent_cycles(settings: Settings, limit: int = 10) -> list[CycleRow]:
    return [CycleRow.of(r) for r in Journal(settings).list(limit)]


def kill_switch_state() -> dict[str, Any]:
    from autooptimizer.policies.killswitch import kill_switch

    return kill_switch.state().model_dump()


class SignalChart(BaseModel):
    """One per-version chart: the SVG drawn from a range query, or why it could not be drawn."""

    key: str
    title: str
    unit: str
    promql: str
    plot: LinePlot | None = None
    error: str | None = None
    series: dict[str, float | None] = Field(default_factory=dict, description="label -> last value")


def version_charts(settings: Settings, now: float | None = None) -> list[SignalChart]:
    """Online NDCG@10, p95 and spend per model version over the last hour (`query_range` of each signal)."""
    from autooptimizer.console.charts import Series, line_chart
    from autooptimizer.errors import AutoOptError
    from autooptimizer.profiles import load_profile
    from autooptimizer.promql import query_range
    from autooptimizer.version_signals import LABEL, version_signals

    end = now or time.time()
    try:
        signals = version_signals(load_profile(settings.env))
    except AutoOptError as exc:
        return [SignalChart(key="error", title="Per-version signals", unit="", promql="", error=exc.problem)]
    charts = []
    for sig in signals:
        res = query_range(sig.promql, end - CHART_SECONDS, end, CHART_STEP_SECONDS, url=settings.prometheus_url,
                          timeout=GATE_TIMEOUT_S)
        chart = SignalChart(key=sig.key, title=sig.title, unit=sig.unit, promql=sig.promql, error=res.error)
        if res.ok:
            series = [Series(label=s.labels.get(LABEL) or ",".join(f"{k}={v}" for k, v in s.labels.items()) or "-",
                             points=s.points) for s in res.series if s.points]
            chart.series = {s.label: s.points[-1][1] for s in series}
            if not series:
                chart.error = "no samples in the last hour (no traffic with feedback, or nothing scraped)"
            chart.plot = line_chart(series, x_range=(end - CHART_SECONDS, end), unit=sig.unit, chart_id=sig.key)
        charts.append(chart)
    return charts
