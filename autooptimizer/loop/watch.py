"""The post-deployment watch: after a promotion, compare the new stable version with the one it replaced.

Degradation is the A/B judge's `fail` (new vs. the old version's samples before the deploy): NDCG@10 worse
(Mann-Whitney U + bootstrap CI), per-request latencies slower by more than the allowed shift (the same Mann-Whitney
+ Hodges-Lehmann test as the A/B, against the old version's pre-deploy latencies), p95 latency above the gate, or
an error rate above the tolerance. Unlike the A/B test the watch checks NDCG, the p95 gate and errors on every poll
and stops at the first significant degradation: a false alarm costs one rollback, a missed one costs users, so
early stopping is the right trade here.

The latency shift is judged ONCE, on the whole window, at its end. The watch has no concurrent control arm (the
baseline was measured before the deploy), and latencies come in bursts: a few seconds of CPU contention on the host
slow every request alike. A per-poll test on the first ~30 requests after a swap reads such a burst as a
regression (seen in the demo beside a CPU hog: ~20 ms per request in the A/B, then from 5 s before the swap both
versions at 50-120 ms and the new one at 60-270 ms in the 3 s after it); the median shift over the whole window is
robust to it. A new version slow enough to matter early is above the p95 gate, which still stops at once.

Missing data never reads as healthy: if, at the end of the window, the new version's NDCG samples are too few, or its
error rate, p95 or latency shift cannot be read (e.g. Prometheus is down), the watch reports `degraded` with
`unverified` naming what is missing, and the cycle rolls back as for a measured degradation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from autooptimizer.loop.abtest import ABConfig, ABResult, ArmStats, SampleSource, judge

BASELINE_LOOKBACK_S = 900.0


def watch_deployment(
    source: SampleSource,
    *,
    new: str,
    old: str,
    seconds: float,
    config: ABConfig,
    since: float,
    baseline_until: float | None = None,
    baseline_since: float | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    on_progress: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Poll for `seconds`; returns {degraded, reasons, detected_at, samples, ...}.

    The baseline is the old version's samples from `baseline_since` (default: BASELINE_LOOKBACK_S before) until the
    deploy. Pass the A/B test's start when there was one: its control arm saw the same traffic mix the new version
    now serves, while older samples may come from another mix (e.g. before a corpus shift) and would bias the test."""
    until = baseline_until or since
    baseline, baseline_latency = _baseline(
        source, old, baseline_since if baseline_since is not None else until - BASELINE_LOOKBACK_S, until)
    checks = 0
    last: dict[str, Any] = {}
    while True:
        snap = source.snapshot(new, since)
        elapsed = clock() - since
        checks += 1
        final = elapsed >= seconds
        if on_progress:
            on_progress(len(snap.ndcg), elapsed)
        result = judge(
            ArmStats(model_version=old, samples=len(baseline)),
            ArmStats(model_version=new, samples=len(snap.ndcg), p95_latency_ms=snap.p95_latency_ms,
                     error_rate=snap.error_rate, requests=snap.requests),
            baseline,
            snap.ndcg,
            config,
            control_latency=baseline_latency,
            treatment_latency=snap.latency_ms,
            compare_latency=final,
        )
        last = {"new": new, "old": old, "samples": len(snap.ndcg), "baseline_samples": len(baseline),
                "latency_samples": len(snap.latency_ms), "baseline_latency_samples": len(baseline_latency),
                "p95_latency_ms": snap.p95_latency_ms, "error_rate": snap.error_rate,
                "mean_ndcg": result.treatment.mean_ndcg, "baseline_mean_ndcg": result.control.mean_ndcg,
                "quality": result.quality.model_dump(), "latency": result.latency.model_dump(),
                "tradeoff": result.tradeoff.model_dump(), "checks": checks, "elapsed_seconds": round(elapsed, 3)}
        if result.verdict == "fail":
            return {**last, "degraded": True, "reasons": result.reasons, "detected_at": clock()}
        if final:
            unverified = _unverified(result, config)
            if unverified:  # missing data never reads as healthy: an unconfirmed deploy is treated as degraded
                return {**last, "degraded": True, "unverified": unverified, "detected_at": clock(),
                        "reasons": [f"the new version's health could not be confirmed: {'; '.join(unverified)}"]}
            return {**last, "degraded": False, "reasons": result.reasons, "detected_at": None}
        sleep(min(config.poll_seconds, max(0.05, seconds - elapsed)))


def _unverified(result: ABResult, config: ABConfig) -> list[str]:
    """What the final judgement could not read about the new version (empty: its health is confirmed)."""
    t = result.treatment
    out: list[str] = []
    if t.samples < config.min_samples:
        out.append(f"{t.samples} NDCG@10 samples, need {config.min_samples}")
    if t.error_rate is None or (t.requests is not None and t.requests < config.min_guard_requests):
        out.append("error rate unknown")
    if t.p95_latency_ms is None and (t.p95_latency_sample_ms is None or t.latency_samples < config.latency_min_samples):
        out.append("p95 latency unknown")
    if result.latency.status == "unknown":
        out.append("latency shift unknown")
    return out


def _baseline(source: SampleSource, old: str, start: float, until: float) -> tuple[list[float], list[float]]:
    """The replaced version's (NDCG@10, latency ms) samples from `start` until the deploy."""
    feedback = getattr(source, "feedback", None)
    if feedback is not None and hasattr(feedback, "samples"):
        latencies: list[float] = feedback.latencies(old, start, until) if hasattr(feedback, "latencies") else []
        return list(feedback.samples(old, start, until)), list(latencies)
    snap = source.snapshot(old, start)
    return list(snap.ndcg), list(snap.latency_ms)
