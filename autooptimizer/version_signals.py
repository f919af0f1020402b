"""Per-model-version signals: online NDCG@10, p95 latency and spend, one series per `model_version`.

The gates (autooptimizer/gates.py) judge the service as a whole; these split the same metrics by version, so a
person can see the canary against the stable model. One definition feeds three readers: the Prometheus recording
rules (`infra.prometheus.rule_files`), the console's charts (which query the expressions themselves, so they work on
any Prometheus that scraped the service) and the Grafana dashboard (which reads the recorded series).

| signal          | PromQL (W = the profile's gates.windowSeconds; `by` = sum by (model_version))   | unit     |
|-----------------|---------------------------------------------------------------------------------|----------|
| `ndcg10`        | by (rate(ndcg10_sum[W])) / by (rate(ndcg10_count[W]))                           | NDCG@10  |
| `p95_ms`        | 1000 * histogram_quantile(0.95, sum by (le, model_version) (rate(bucket[W])))   | ms       |
| `cost_per_hour` | 3600 * by (rate(cost_dollars_total[W]))                                         | $ / hour |
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from autooptimizer.profiles import Profile
from autooptimizer.search import metric_names as m

SignalKey = Literal["ndcg10", "p95_ms", "cost_per_hour"]
LABEL = "model_version"


class VersionSignal(BaseModel):
    """One per-version signal: its PromQL (one series per model_version) and the recording rule that stores it."""

    key: SignalKey
    title: str
    unit: str
    record: str
    promql: str


def version_signals(profile: Profile) -> list[VersionSignal]:
    """The three per-version signals over the profile's gate window."""
    w = f"{profile.gates.window_seconds}s"
    by = f"sum by ({LABEL})"
    return [
        VersionSignal(key="ndcg10", title="Online NDCG@10", unit="NDCG@10", record="autoopt:ndcg10_by_version:mean",
                      promql=f"{by} (rate({m.FEEDBACK_NDCG}_sum[{w}])) / {by} (rate({m.FEEDBACK_NDCG}_count[{w}]))"),
        VersionSignal(key="p95_ms", title="p95 latency", unit="ms", record="autoopt:search_latency_p95_by_version:ms",
                      promql=f"1000 * histogram_quantile(0.95, sum by (le, {LABEL}) "
                             f"(rate({m.REQUEST_SECONDS}_bucket[{w}])))"),
        VersionSignal(key="cost_per_hour", title="Spend rate", unit="$ / hour",
                      record="autoopt:cost_by_version:dollars_per_hour",
                      promql=f"3600 * {by} (rate({m.COST_TOTAL}[{w}]))"),
    ]
