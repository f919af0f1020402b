"""The A/B judge: is the canary (treatment) better than the stable model (control) on live traffic?

In the manner of Kayenta/Flagger: collect per-request samples for both model versions until each arm has a minimum
sample count or a maximum duration passes, then judge ONCE (no peeking, so alpha holds):

- quality: a one-sided Mann-Whitney U test on per-request NDCG@10, plus a seeded bootstrap confidence interval of
  the difference of means; `pass` needs both to agree that the treatment wins, `fail` that it loses;
- latency, relative: per-request server latencies, judged like Kayenta's Mann-Whitney classifier: a regression
  needs BOTH a significant one-sided Mann-Whitney U (treatment slower, p < alpha) AND a Hodges-Lehmann shift
  (median of all pairwise treatment-control differences) above the allowed shift, max(latencyTolerancePct % of
  the control median, latencySlackMs). A p95 point value over ~100 requests is a tail order statistic that noise
  (another process on the CPU) moves by 50 % or more, so it is never compared between arms;
- latency, absolute: the treatment's p95 (Prometheus, else the per-request samples) above the latency gate fails;
- errors: the treatment's error rate (Prometheus) above control + errorTolerance fails.

A guard regression is a `fail` whatever the quality says; a guard that cannot be read (too few latency samples, no
Prometheus) makes a would-be `pass` `inconclusive` (unknown is never ok). A pass reports its trade-off (NDCG@10
gained against latency added). The verdict and every statistic go to `ab_test_results.json`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol, TypeGuard

import numpy as np
from pydantic import BaseModel, Field

from autooptimizer.profiles import Profile

Verdict = Literal["pass", "fail", "inconclusive"]

NDCG_BINS = 10  # ArmStats.ndcg_histogram: equal bins over [0, 1]
# Pairwise differences for the Hodges-Lehmann estimate are n*m floats: arms above this are subsampled (seeded).
MAX_LATENCY_SAMPLES_PER_ARM = 1000


class ABConfig(BaseModel):
    """Judge settings; `from_profile` takes them from the environment profile (`abTest.*`, `gates.p95LatencyMs`)."""

    min_samples: int = Field(default=20, ge=2)
    max_duration_seconds: float = Field(default=120, gt=0)
    alpha: float = Field(default=0.05, gt=0, lt=1)
    min_effect: float = Field(default=0.0, ge=0, description="smallest NDCG@10 gain (absolute) worth a pass")
    latency_tolerance_pct: float = Field(default=20.0, ge=0,
                                         description="the treatment's median latency shift may reach "
                                         "this % of the control median (profile abTest.latencyTolerancePct)")
    latency_slack_ms: float = Field(default=25.0, ge=0, description="... and at least this many ms before it counts "
                                    "(profile abTest.latencySlackMs)")
    latency_min_samples: int = Field(default=20, ge=5,
                                     description="per-request latencies per arm below which the latency "
                                     "comparison is unknown (profile abTest.latencyMinSamples)")
    min_guard_requests: int = Field(default=20, ge=1,
                                    description="requests (Prometheus) below which the treatment's error "
                                    "rate is unknown (profile abTest.minGuardRequests)")
    max_p95_ms: float = Field(default=800.0, gt=0, description="the latency gate: a treatment above it fails "
                              "(profile gates.p95LatencyMs)")
    error_tolerance: float = Field(default=0.01, ge=0, description="treatment error rate may exceed control by this "
                                   "(profile abTest.errorTolerance)")
    bootstrap_resamples: int = Field(default=2000, ge=100)
    poll_seconds: float = Field(default=1.0, gt=0)
    seed: int = 0

    @classmethod
    def from_profile(cls, profile: Profile, **overrides: object) -> ABConfig:
        ab = profile.ab_test
        base: dict[str, object] = {
            "min_samples": ab.min_samples,
            "max_duration_seconds": ab.max_duration_seconds,
            "alpha": ab.alpha,
            "latency_tolerance_pct": ab.latency_tolerance_pct,
            "latency_slack_ms": ab.latency_slack_ms,
            "latency_min_samples": ab.latency_min_samples,
            "min_guard_requests": ab.min_guard_requests,
            "error_tolerance": ab.error_tolerance,
            "max_p95_ms": profile.gates.p95_latency_ms,
        }
        base.update(overrides)
        return cls.model_validate(base)


class ArmStats(BaseModel):
    """What one model version showed during the test."""

    model_version: str
    samples: int
    mean_ndcg: float | None = None
    median_ndcg: float | None = None
    ndcg_histogram: list[int] | None = Field(default=None, description="per-request NDCG@10 counts in NDCG_BINS "
                                             "equal bins over [0, 1] (the arm's distribution, as the console draws it)")
    p95_latency_ms: float | None = Field(default=None, description="from Prometheus (all requests), for the gate")
    error_rate: float | None = None
    requests: float | None = Field(default=None, description="requests behind the error rate (Prometheus), when known")
    latency_samples: int = 0
    median_latency_ms: float | None = Field(default=None, description="of the per-request server latencies")
    p95_latency_sample_ms: float | None = Field(default=None, description="of the per-request server latencies")


class QualityTest(BaseModel):
    method: str = "mann-whitney-u"
    u_statistic: float | None = None
    p_value_greater: float | None = None
    p_value_less: float | None = None
    delta_mean: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    confidence: float = 0.95


class LatencyTest(BaseModel):
    """Treatment vs control on per-request latencies (ms): significant AND larger than the allowed shift fails."""

    method: str = "mann-whitney-u + hodges-lehmann shift"
    status: Literal["ok", "regressed", "unknown"] = "unknown"
    u_statistic: float | None = None
    p_value_slower: float | None = Field(default=None,
                                         description="one-sided: treatment latencies stochastically larger")
    shift_ms: float | None = Field(default=None,
                                   description="Hodges-Lehmann: median of treatment - control differences")
    shift_pct: float | None = Field(default=None, description="shift_ms as % of the control median")
    ci_low_ms: float | None = None
    ci_high_ms: float | None = None
    allowed_shift_ms: float | None = Field(default=None, description="max(tolerance % of control median, slack ms)")
    confidence: float = 0.95


class TradeOff(BaseModel):
    """What the treatment costs for what it gains: NDCG@10 (mean difference) against latency (median shift)."""

    ndcg_gain: float | None = None
    latency_added_ms: float | None = None
    latency_added_pct: float | None = None
    summary: str | None = None


class ABResult(BaseModel):
    """The verdict with its evidence; written verbatim to ab_test_results.json."""

    verdict: Verdict
    reasons: list[str]
    control: ArmStats
    treatment: ArmStats
    quality: QualityTest
    latency: LatencyTest = Field(default_factory=LatencyTest)
    tradeoff: TradeOff = Field(default_factory=TradeOff)
    config: ABConfig
    started_at: str | None = None
    finished_at: str | None = None
    duration_seconds: float | None = None
    stopped_by: Literal["min_samples", "max_duration", "immediate"] = "immediate"

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.model_dump(mode="json"), indent=2))
        return path


def _bootstrap_ci(x: np.ndarray, y: np.ndarray, resamples: int, confidence: float, seed: int) -> tuple[float, float]:
    """Percentile CI of mean(y) - mean(x), resampling each arm independently (seeded: same data, same CI)."""
    rng = np.random.default_rng(seed)
    xs = rng.choice(x, size=(resamples, x.size), replace=True).mean(axis=1)
    ys = rng.choice(y, size=(resamples, y.size), replace=True).mean(axis=1)
    diff = ys - xs
    lo, hi = np.quantile(diff, [(1 - confidence) / 2, 1 - (1 - confidence) / 2])
    return float(lo), float(hi)


def _clean(values: Sequence[float] | None) -> np.ndarray:
    arr = np.asarray([float(v) for v in values or ()], dtype=float)
    return arr[np.isfinite(arr)]


def hodges_lehmann(x: np.ndarray, y: np.ndarray, confidence: float) -> tuple[float, float, float]:
    """(shift, ci_low, ci_high) of y relative to x: the median of all n*m differences y_j - x_i, and its
    distribution-free CI from the Mann-Whitney null distribution (normal approximation, n, m >= ~10):
    [D_(C+1), D_(nm-C)] with C = floor(nm/2 - z * sqrt(nm(n+m+1)/12)) (Hollander & Wolfe, Nonparametric
    Statistical Methods, 3rd ed., sec. 4.3; R's wilcox.test(conf.int=TRUE) without the exact branch)."""
    from scipy.stats import norm

    d = np.sort((y[:, None] - x[None, :]).ravel())
    n, m, pairs = x.size, y.size, d.size
    z = float(norm.ppf(1 - (1 - confidence) / 2))
    c = int(math.floor(pairs / 2 - z * math.sqrt(n * m * (n + m + 1) / 12)))
    c = min(max(c, 0), pairs - 1)
    return float(np.median(d)), float(d[c]), float(d[pairs - 1 - c])


def _cap(arr: np.ndarray, seed: int) -> np.ndarray:
    """A seeded subsample of at most MAX_LATENCY_SAMPLES_PER_ARM values (bounds the n*m pairwise differences)."""
    if arr.size <= MAX_LATENCY_SAMPLES_PER_ARM:
        return arr
    return np.random.default_rng(seed).choice(arr, MAX_LATENCY_SAMPLES_PER_ARM, replace=False)


def latency_test(x: np.ndarray, y: np.ndarray, config: ABConfig) -> LatencyTest:
    """Control latencies `x` vs treatment latencies `y` (ms, per request). `regressed` needs the one-sided
    Mann-Whitney p(slower) < alpha AND the Hodges-Lehmann shift above max(tolerance % of the control median,
    slack ms): significance alone would fail a canary for 1 ms on enough traffic, size alone on noise."""
    from scipy.stats import mannwhitneyu

    test = LatencyTest(confidence=1 - config.alpha)
    if min(x.size, y.size) < config.latency_min_samples:
        return test
    if np.ptp(np.concatenate([x, y])) == 0:
        u_stat, p_slower = float(x.size * y.size / 2), 1.0
    else:
        res = mannwhitneyu(y, x, alternative="greater")
        u_stat, p_slower = float(res.statistic), float(res.pvalue)
    shift, lo, hi = hodges_lehmann(_cap(x, config.seed), _cap(y, config.seed + 1), 1 - config.alpha)
    c_median = float(np.median(x))
    allowed = max(c_median * config.latency_tolerance_pct / 100, config.latency_slack_ms)
    regressed = p_slower < config.alpha and shift > allowed
    return test.model_copy(update={
        "status": "regressed" if regressed else "ok", "u_statistic": u_stat, "p_value_slower": p_slower,
        "shift_ms": shift, "shift_pct": 100 * shift / c_median if c_median > 0 else None, "ci_low_ms": lo,
        "ci_high_ms": hi, "allowed_shift_ms": allowed,
    })


def judge(
    control: ArmStats,
    treatment: ArmStats,
    control_ndcg: Sequence[float],
    treatment_ndcg: Sequence[float],
    config: ABConfig,
    control_latency: Sequence[float] | None = None,
    treatment_latency: Sequence[float] | None = None,
    *,
    compare_latency: bool = True,
) -> ABResult:
    """Judge one A/B comparison from per-request NDCG@10 and latency (ms) samples plus each arm's Prometheus p95
    and error rate. No latency samples means the relative latency guard is unknown (never ok).
    `compare_latency=False` defers the latency shift test (unknown; the samples still feed the p95 gate)."""
    from scipy.stats import mannwhitneyu

    x, y = _clean(control_ndcg), _clean(treatment_ndcg)
    lx, ly = _clean(control_latency), _clean(treatment_latency)
    control = control.model_copy(update={**_describe(x), **_describe_latency(lx)})
    treatment = treatment.model_copy(update={**_describe(y), **_describe_latency(ly)})
    latency = latency_test(lx, ly, config) if compare_latency else LatencyTest(confidence=1 - config.alpha)
    reasons: list[str] = []
    guard_fail, guard_unknown = _guards(control, treatment, latency, config, reasons, compare_latency)
    quality = QualityTest(confidence=1 - config.alpha)

    def result(verdict: Verdict) -> ABResult:
        tradeoff = _tradeoff(quality, latency)
        if tradeoff.summary:
            reasons.append(f"trade-off: {tradeoff.summary}")
        return ABResult(verdict=verdict, reasons=reasons, control=control, treatment=treatment, quality=quality,
                        latency=latency, tradeoff=tradeoff, config=config)

    if min(x.size, y.size) < config.min_samples:
        reasons.append(
            f"too few NDCG samples: control {x.size}, treatment {y.size}, need {config.min_samples} in each arm"
        )
        return result("fail" if guard_fail else "inconclusive")

    if np.ptp(np.concatenate([x, y])) == 0:
        p_greater = p_less = 1.0
        u_stat = float(x.size * y.size / 2)
    else:
        greater = mannwhitneyu(y, x, alternative="greater")
        less = mannwhitneyu(y, x, alternative="less")
        u_stat, p_greater, p_less = float(greater.statistic), float(greater.pvalue), float(less.pvalue)
    lo, hi = _bootstrap_ci(x, y, config.bootstrap_resamples, 1 - config.alpha, config.seed)
    delta = float(y.mean() - x.mean())
    quality = quality.model_copy(update={"u_statistic": u_stat, "p_value_greater": p_greater, "p_value_less": p_less,
                                         "delta_mean": delta, "ci_low": lo, "ci_high": hi})

    wins = p_greater < config.alpha and lo > 0 and delta >= config.min_effect
    loses = p_less < config.alpha and hi < 0
    if guard_fail:
        verdict: Verdict = "fail"
    elif loses:
        verdict = "fail"
        reasons.append(f"treatment NDCG@10 is worse: delta {delta:+.4f}, CI [{lo:+.4f}, {hi:+.4f}], "
                       f"p(less)={p_less:.4g} < alpha {config.alpha}")
    elif wins and guard_unknown:
        verdict = "inconclusive"
        reasons.append(f"treatment NDCG@10 wins (delta {delta:+.4f}) but a guard metric could not be read")
    elif wins:
        verdict = "pass"
        reasons.append(f"treatment NDCG@10 wins: delta {delta:+.4f}, CI [{lo:+.4f}, {hi:+.4f}], "
                       f"p(greater)={p_greater:.4g} < alpha {config.alpha}")
    else:
        verdict = "inconclusive"
        reasons.append(f"no significant NDCG@10 difference: delta {delta:+.4f}, CI [{lo:+.4f}, {hi:+.4f}], "
                       f"p(greater)={p_greater:.4g}, p(less)={p_less:.4g}, min effect {config.min_effect}")
    return result(verdict)


def _describe(arr: np.ndarray) -> dict[str, object]:
    if arr.size == 0:
        return {"samples": 0, "mean_ndcg": None, "median_ndcg": None, "ndcg_histogram": None}
    counts, _ = np.histogram(np.clip(arr, 0.0, 1.0), bins=NDCG_BINS, range=(0.0, 1.0))
    return {"samples": int(arr.size), "mean_ndcg": float(arr.mean()), "median_ndcg": float(np.median(arr)),
            "ndcg_histogram": [int(c) for c in counts]}


def _describe_latency(arr: np.ndarray) -> dict[str, object]:
    if arr.size == 0:
        return {"latency_samples": 0, "median_latency_ms": None, "p95_latency_sample_ms": None}
    return {"latency_samples": int(arr.size), "median_latency_ms": float(np.median(arr)),
            "p95_latency_sample_ms": float(np.quantile(arr, 0.95))}


def _tradeoff(quality: QualityTest, latency: LatencyTest) -> TradeOff:
    """e.g. '+0.164 NDCG@10 for +12 ms median latency (+25 %)'; no summary before the NDCG test has run."""
    gain, shift, pct = quality.delta_mean, latency.shift_ms, latency.shift_pct
    if gain is None:
        return TradeOff(latency_added_ms=shift, latency_added_pct=pct)
    if shift is None:
        cost = "unknown latency (too few per-request latencies)"
    else:
        cost = f"{shift:+.0f} ms median latency" + (f" ({pct:+.0f} %)" if pct is not None else "")
    return TradeOff(ndcg_gain=gain, latency_added_ms=shift, latency_added_pct=pct,
                    summary=f"{gain:+.3f} NDCG@10 for {cost}")


def _known(v: float | None) -> TypeGuard[float]:
    return v is not None and math.isfinite(v)


def _guards(control: ArmStats, treatment: ArmStats, latency: LatencyTest, config: ABConfig,
            reasons: list[str], compare_latency: bool = True) -> tuple[bool, bool]:
    """(failed, unknown) for the latency gate, the relative latency test and the error rate; one reason each."""
    failed = unknown = False
    # The gate: Prometheus's p95 (every request, also those without feedback) and the per-request samples' p95.
    p95s = [v for v in (treatment.p95_latency_ms,
                        treatment.p95_latency_sample_ms if treatment.latency_samples >= config.latency_min_samples
                        else None) if _known(v)]
    if not p95s:
        unknown = True
        reasons.append("treatment p95 latency unknown (no Prometheus reading and too few per-request latencies)")
    elif max(p95s) > config.max_p95_ms:
        failed = True
        reasons.append(f"treatment p95 latency {max(p95s):.0f} ms is above the gate {config.max_p95_ms:.0f} ms")
    if compare_latency:
        failed_rel, unknown_rel = _latency_reason(control, treatment, latency, config, reasons)
        failed, unknown = failed or failed_rel, unknown or unknown_rel
    else:
        unknown = True
        reasons.append("latency shift not judged yet (deferred)")
    t_err, c_err = treatment.error_rate, control.error_rate
    too_few = treatment.requests is not None and treatment.requests < config.min_guard_requests
    if not _known(t_err) or too_few:
        unknown = True
        reasons.append("treatment error rate unknown" + (
            f" ({treatment.requests:.0f} requests, need {config.min_guard_requests}: abTest.minGuardRequests)"
            if too_few else ""))
    else:
        base = c_err if _known(c_err) else 0.0
        if t_err > base + config.error_tolerance:
            failed = True
            reasons.append(f"treatment error rate {t_err:.3f} regressed vs control {base:.3f} "
                           f"(tolerance {config.error_tolerance})")
    return failed, unknown


def _latency_reason(control: ArmStats, treatment: ArmStats, lat: LatencyTest, config: ABConfig,
                    reasons: list[str]) -> tuple[bool, bool]:
    if lat.status == "unknown":
        reasons.append(f"latency comparison unknown: {control.latency_samples} control and "
                       f"{treatment.latency_samples} treatment per-request latencies, need "
                       f"{config.latency_min_samples} in each arm")
        return False, True
    assert lat.shift_ms is not None and lat.allowed_shift_ms is not None and lat.p_value_slower is not None
    where = (f"median shift {lat.shift_ms:+.1f} ms, CI [{lat.ci_low_ms:+.1f}, {lat.ci_high_ms:+.1f}], "
             f"p(slower)={lat.p_value_slower:.3g}, allowed +{lat.allowed_shift_ms:.1f} ms "
             f"(max({config.latency_tolerance_pct:g} % of control median {control.median_latency_ms:.1f} ms, "
             f"{config.latency_slack_ms:g} ms))")
    if lat.status == "regressed":
        reasons.append(f"treatment latency regressed: {where}")
        return True, False
    reasons.append(f"treatment latency within tolerance: {where}")
    return False, False


class ArmSnapshot(BaseModel):
    """One read of a model version's live numbers since the test started."""

    ndcg: list[float] = Field(default_factory=list[float])
    latency_ms: list[float] = Field(default_factory=list[float], description="per-request server latencies")
    p95_latency_ms: float | None = None
    error_rate: float | None = None
    requests: float | None = Field(default=None, description="requests the error rate was computed over, when known")


class SampleSource(Protocol):
    """Where live numbers come from (the service's feedback log + Prometheus in the embedded default)."""

    def snapshot(self, model_version: str, since: float) -> ArmSnapshot: ...


def _enough(c: ArmSnapshot, t: ArmSnapshot, config: ABConfig) -> bool:
    return (min(len(c.ndcg), len(t.ndcg)) >= config.min_samples
            and min(len(c.latency_ms), len(t.latency_ms)) >= config.latency_min_samples)


def run_ab_test(
    source: SampleSource,
    control_version: str,
    treatment_version: str,
    config: ABConfig,
    *,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    on_progress: Callable[[int, int, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ABResult:
    """Collect until both arms reach `min_samples` NDCG and `latency_min_samples` latency samples, or
    `max_duration_seconds` passes, then judge once."""
    started = clock()
    stopped_by: Literal["min_samples", "max_duration"] = "max_duration"
    while True:
        c, t = source.snapshot(control_version, started), source.snapshot(treatment_version, started)
        elapsed = clock() - started
        if on_progress:
            on_progress(len(c.ndcg), len(t.ndcg), elapsed)
        if _enough(c, t, config):
            stopped_by = "min_samples"
            break
        if elapsed >= config.max_duration_seconds or (should_stop and should_stop()):
            break
        sleep(min(config.poll_seconds, max(0.0, config.max_duration_seconds - elapsed)))
    # Guards are read once more at the end so they cover the whole test window.
    c, t = source.snapshot(control_version, started), source.snapshot(treatment_version, started)
    result = judge(
        ArmStats(model_version=control_version, samples=len(c.ndcg), p95_latency_ms=c.p95_latency_ms,
                 error_rate=c.error_rate, requests=c.requests),
        ArmStats(model_version=treatment_version, samples=len(t.ndcg), p95_latency_ms=t.p95_latency_ms,
                 error_rate=t.error_rate, requests=t.requests),
        c.ndcg,
        t.ndcg,
        config,
        control_latency=c.latency_ms,
        treatment_latency=t.latency_ms,
    )
    finished = clock()
    return result.model_copy(update={
        "started_at": _iso(started), "finished_at": _iso(finished), "duration_seconds": round(finished - started, 3),
        "stopped_by": stopped_by,
    })


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat()
