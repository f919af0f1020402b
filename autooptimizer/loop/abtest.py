"""The A/B judge: is the canary (treatment) better than the stable model (control) on live traffic?

In the manner of Kayenta/Flagger: collect per-request online NDCG@10 samples for both model versions until each
arm has a minimum sample count or a maximum duration passes, then judge ONCE (no peeking, so alpha holds):

- quality: a one-sided Mann-Whitney U test on per-request NDCG@10, plus a seeded bootstrap confidence interval of
  the difference of means; `pass` needs both to agree that the treatment wins, `fail` that it loses;
- guards: p95 latency and error rate per model version (from Prometheus). A guard regression is a `fail` whatever
  the quality says; a guard that cannot be read makes a would-be `pass` `inconclusive` (unknown is never ok).

The verdict and every statistic go to `ab_test_results.json`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
from pydantic import BaseModel, Field

from autooptimizer.profiles import Profile

Verdict = Literal["pass", "fail", "inconclusive"]


class ABConfig(BaseModel):
    """Judge settings; `from_profile` takes them from the environment profile."""

    min_samples: int = Field(20, ge=2)
    max_duration_seconds: float = Field(120, gt=0)
    alpha: float = Field(0.05, gt=0, lt=1)
    min_effect: float = Field(0.0, ge=0, description="smallest NDCG@10 gain (absolute) worth a pass")
    latency_tolerance_pct: float = Field(20.0, ge=0, description="treatment p95 may exceed control by this %")
    latency_slack_ms: float = Field(25.0, ge=0, description="... and by at least this many ms before it counts")
    max_p95_ms: float = Field(800.0, gt=0, description="the latency gate: a treatment above it fails")
    error_tolerance: float = Field(0.01, ge=0, description="treatment error rate may exceed control by this")
    bootstrap_resamples: int = Field(2000, ge=100)
    poll_seconds: float = Field(1.0, gt=0)
    seed: int = 0

    @classmethod
    def from_profile(cls, profile: Profile, **overrides: object) -> ABConfig:
        base = {
            "min_samples": profile.ab_test.min_samples,
            "max_duration_seconds": profile.ab_test.max_duration_seconds,
            "alpha": profile.ab_test.alpha,
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
    p95_latency_ms: float | None = None
    error_rate: float | None = None


class QualityTest(BaseModel):
    method: str = "mann-whitney-u"
    u_statistic: float | None = None
    p_value_greater: float | None = None
    p_value_less: float | None = None
    delta_mean: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    confidence: float = 0.95


class ABResult(BaseModel):
    """The verdict with its evidence; written verbatim to ab_test_results.json."""

    verdict: Verdict
    reasons: list[str]
    control: ArmStats
    treatment: ArmStats
    quality: QualityTest
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


def _clean(values: Sequence[float]) -> np.ndarray:
    arr = np.asarray([float(v) for v in values], dtype=float)
    return arr[np.isfinite(arr)]


def judge(
    control: ArmStats,
    treatment: ArmStats,
    control_ndcg: Sequence[float],
    treatment_ndcg: Sequence[float],
    config: ABConfig,
) -> ABResult:
    """Judge one A/B comparison from per-request NDCG@10 samples plus each arm's latency and error guard values."""
    from scipy.stats import mannwhitneyu

    x, y = _clean(control_ndcg), _clean(treatment_ndcg)
    control = control.model_copy(update=_describe(x))
    treatment = treatment.model_copy(update=_describe(y))
    reasons: list[str] = []
    guard_fail, guard_unknown = _guards(control, treatment, config, reasons)
    quality = QualityTest(confidence=1 - config.alpha)

    if min(x.size, y.size) < config.min_samples:
        reasons.append(
            f"too few NDCG samples: control {x.size}, treatment {y.size}, need {config.min_samples} in each arm"
        )
        verdict: Verdict = "fail" if guard_fail else "inconclusive"
        return ABResult(verdict=verdict, reasons=reasons, control=control, treatment=treatment, quality=quality,
                        config=config)

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
        verdict = "fail"
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
    return ABResult(verdict=verdict, reasons=reasons, control=control, treatment=treatment, quality=quality,
                    config=config)


def _describe(arr: np.ndarray) -> dict[str, object]:
    if arr.size == 0:
        return {"samples": 0, "mean_ndcg": None, "median_ndcg": None}
    return {"samples": int(arr.size), "mean_ndcg": float(arr.mean()), "median_ndcg": float(np.median(arr))}


def _guards(control: ArmStats, treatment: ArmStats, config: ABConfig, reasons: list[str]) -> tuple[bool, bool]:
    """(failed, unknown) for the latency and error-rate guards; reasons get one line per finding."""
    failed = unknown = False
    t_lat, c_lat = treatment.p95_latency_ms, control.p95_latency_ms
    if t_lat is None or (isinstance(t_lat, float) and math.isnan(t_lat)):
        unknown = True
        reasons.append("treatment p95 latency unknown")
    else:
        if t_lat > config.max_p95_ms:
            failed = True
            reasons.append(f"treatment p95 latency {t_lat:.0f} ms is above the gate {config.max_p95_ms:.0f} ms")
        if c_lat is not None and not math.isnan(c_lat):
            limit = max(c_lat * (1 + config.latency_tolerance_pct / 100), c_lat + config.latency_slack_ms)
            if t_lat > limit:
                failed = True
                reasons.append(f"treatment p95 latency {t_lat:.0f} ms regressed vs control {c_lat:.0f} ms "
                               f"(limit {limit:.0f} ms)")
    t_err, c_err = treatment.error_rate, control.error_rate
    if t_err is None or math.isnan(t_err):
        unknown = True
        reasons.append("treatment error rate unknown")
    else:
        base = 0.0 if c_err is None or math.isnan(c_err) else c_err
        if t_err > base + config.error_tolerance:
            failed = True
            reasons.append(f"treatment error rate {t_err:.3f} regressed vs control {base:.3f} "
                           f"(tolerance {config.error_tolerance})")
    return failed, unknown


class ArmSnapshot(BaseModel):
    """One read of a model version's live numbers since the test started."""

    ndcg: list[float] = Field(default_factory=list)
    p95_latency_ms: float | None = None
    error_rate: float | None = None


class SampleSource(Protocol):
    """Where live numbers come from (the service's feedback log + Prometheus in the embedded default)."""

    def snapshot(self, model_version: str, since: float) -> ArmSnapshot: ...


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
    """Collect until both arms reach `min_samples` or `max_duration_seconds` passes, then judge once."""
    started = clock()
    stopped_by: Literal["min_samples", "max_duration"] = "max_duration"
    while True:
        c, t = source.snapshot(control_version, started), source.snapshot(treatment_version, started)
        elapsed = clock() - started
        if on_progress:
            on_progress(len(c.ndcg), len(t.ndcg), elapsed)
        if min(len(c.ndcg), len(t.ndcg)) >= config.min_samples:
            stopped_by = "min_samples"
            break
        if elapsed >= config.max_duration_seconds or (should_stop and should_stop()):
            break
        sleep(min(config.poll_seconds, max(0.0, config.max_duration_seconds - elapsed)))
    # Guards are read once more at the end so they cover the whole test window.
    c, t = source.snapshot(control_version, started), source.snapshot(treatment_version, started)
    result = judge(
        ArmStats(model_version=control_version, samples=len(c.ndcg), p95_latency_ms=c.p95_latency_ms,
                 error_rate=c.error_rate),
        ArmStats(model_version=treatment_version, samples=len(t.ndcg), p95_latency_ms=t.p95_latency_ms,
                 error_rate=t.error_rate),
        c.ndcg,
        t.ndcg,
        config,
    )
    finished = clock()
    return result.model_copy(update={
        "started_at": _iso(started), "finished_at": _iso(finished), "duration_seconds": round(finished - started, 3),
        "stopped_by": stopped_by,
    })


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat()
