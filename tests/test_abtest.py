"""The A/B judge gives the known verdicts on synthetic samples."""

from __future__ import annotations

import json

import numpy as np
import pytest

from autooptimizer.loop.abtest import ABConfig, ArmSnapshot, ArmStats, judge, run_ab_test
from autooptimizer.profiles import load_profile

CFG = ABConfig(min_samples=20, alpha=0.05, max_p95_ms=800)


def _ndcg(mean: float, n: int, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    return list(np.clip(rng.normal(mean, 0.12, n), 0, 1))


def _arms(c_lat: float | None = 100, t_lat: float | None = 105, c_err: float | None = 0.0,
          t_err: float | None = 0.0) -> tuple[ArmStats, ArmStats]:
    return (ArmStats(model_version="v1", samples=0, p95_latency_ms=c_lat, error_rate=c_err),
            ArmStats(model_version="v2", samples=0, p95_latency_ms=t_lat, error_rate=t_err))


def test_clear_win_passes() -> None:
    r = judge(*_arms(), _ndcg(0.40, 60, 1), _ndcg(0.60, 60, 2), CFG)
    assert r.verdict == "pass", r.reasons
    assert r.quality.p_value_greater < 0.001
    assert r.quality.ci_low > 0 and r.quality.delta_mean == pytest.approx(
        r.treatment.mean_ndcg - r.control.mean_ndcg)
    assert r.control.samples == 60 and r.treatment.samples == 60


def test_clear_loss_fails() -> None:
    r = judge(*_arms(), _ndcg(0.60, 60, 3), _ndcg(0.35, 60, 4), CFG)
    assert r.verdict == "fail"
    assert r.quality.p_value_less < 0.001 and r.quality.ci_high < 0
    assert any("worse" in s for s in r.reasons)


def test_too_few_samples_is_inconclusive_even_for_a_big_win() -> None:
    r = judge(*_arms(), _ndcg(0.2, 10, 5), _ndcg(0.9, 10, 6), CFG)
    assert r.verdict == "inconclusive"
    assert "too few" in r.reasons[-1]
    assert r.quality.p_value_greater is None


def test_no_difference_is_inconclusive() -> None:
    same = _ndcg(0.5, 80, 7)
    r = judge(*_arms(), same, list(same), CFG)
    assert r.verdict == "inconclusive"
    assert r.quality.delta_mean == pytest.approx(0.0)
    # all-tied samples (e.g. every NDCG 1.0) do not crash the test
    r2 = judge(*_arms(), [1.0] * 30, [1.0] * 30, CFG)
    assert r2.verdict == "inconclusive" and r2.quality.p_value_greater == 1.0


def test_latency_regression_fails_despite_quality_win() -> None:
    r = judge(*_arms(c_lat=100, t_lat=300), _ndcg(0.40, 60, 8), _ndcg(0.60, 60, 9), CFG)
    assert r.verdict == "fail"
    assert any("latency" in s and "regressed" in s for s in r.reasons)
    # above the gate's absolute ceiling fails too, even when control is equally slow
    r2 = judge(*_arms(c_lat=900, t_lat=900), _ndcg(0.40, 60, 8), _ndcg(0.60, 60, 9), CFG)
    assert r2.verdict == "fail" and any("above the gate" in s for s in r2.reasons)


def test_small_latency_noise_is_tolerated() -> None:
    r = judge(*_arms(c_lat=20, t_lat=40), _ndcg(0.40, 60, 8), _ndcg(0.60, 60, 9), CFG)
    assert r.verdict == "pass", r.reasons  # +20 ms is under the 25 ms slack


def test_error_regression_fails() -> None:
    r = judge(*_arms(c_err=0.0, t_err=0.2), _ndcg(0.40, 60, 10), _ndcg(0.60, 60, 11), CFG)
    assert r.verdict == "fail"
    assert any("error rate" in s for s in r.reasons)
    # a guard regression fails even before the minimum sample count
    r2 = judge(*_arms(c_err=0.0, t_err=0.5), _ndcg(0.4, 3, 1), _ndcg(0.6, 3, 2), CFG)
    assert r2.verdict == "fail"


def test_unknown_guard_turns_a_win_into_inconclusive() -> None:
    r = judge(*_arms(t_lat=None), _ndcg(0.40, 60, 12), _ndcg(0.60, 60, 13), CFG)
    assert r.verdict == "inconclusive"
    assert any("unknown" in s for s in r.reasons)


def test_min_effect_blocks_tiny_wins() -> None:
    cfg = CFG.model_copy(update={"min_effect": 0.5})
    r = judge(*_arms(), _ndcg(0.40, 200, 14), _ndcg(0.50, 200, 15), cfg)
    assert r.verdict == "inconclusive"


def test_bootstrap_is_deterministic_under_seed() -> None:
    a, b = _ndcg(0.4, 40, 16), _ndcg(0.5, 40, 17)
    r1, r2 = judge(*_arms(), a, b, CFG), judge(*_arms(), a, b, CFG)
    assert (r1.quality.ci_low, r1.quality.ci_high) == (r2.quality.ci_low, r2.quality.ci_high)


def test_config_from_profile_reads_thresholds() -> None:
    prod = load_profile("prod")
    cfg = ABConfig.from_profile(prod)
    assert cfg.min_samples == prod.ab_test.min_samples
    assert cfg.max_p95_ms == prod.gates.p95_latency_ms
    assert cfg.max_duration_seconds == prod.ab_test.max_duration_seconds


class _GrowingSource:
    """Samples arrive over (fake) time: `per_tick` per arm per poll."""

    def __init__(self, per_tick: int, control_mean: float, treat_mean: float) -> None:
        self.ticks = 0
        self.per_tick = per_tick
        self.data = {"v1": _ndcg(control_mean, 500, 20), "v2": _ndcg(treat_mean, 500, 21)}

    def snapshot(self, model_version: str, since: float) -> ArmSnapshot:
        n = self.ticks * self.per_tick
        return ArmSnapshot(ndcg=self.data[model_version][:n], p95_latency_ms=90.0, error_rate=0.0)


def _fake_clock(source: _GrowingSource):
    now = [1000.0]

    def clock() -> float:
        return now[0]

    def sleep(dt: float) -> None:
        now[0] += dt
        source.ticks += 1

    return clock, sleep


def test_run_stops_at_min_samples_and_writes_results(tmp_path) -> None:
    src = _GrowingSource(per_tick=5, control_mean=0.4, treat_mean=0.7)
    clock, sleep = _fake_clock(src)
    r = run_ab_test(src, "v1", "v2", CFG.model_copy(update={"min_samples": 30}), clock=clock, sleep=sleep)
    assert r.stopped_by == "min_samples" and r.verdict == "pass"
    assert r.treatment.samples >= 30 and r.duration_seconds == pytest.approx(6.0)
    out = r.write(tmp_path / "ab_test_results.json")
    data = json.loads(out.read_text())
    assert data["verdict"] == "pass" and data["quality"]["method"] == "mann-whitney-u"
    assert data["config"]["min_samples"] == 30


def test_run_times_out_inconclusive_without_traffic() -> None:
    src = _GrowingSource(per_tick=0, control_mean=0.4, treat_mean=0.7)
    clock, sleep = _fake_clock(src)
    r = run_ab_test(src, "v1", "v2", CFG.model_copy(update={"max_duration_seconds": 10}), clock=clock, sleep=sleep)
    assert r.stopped_by == "max_duration" and r.verdict == "inconclusive"
    assert r.duration_seconds == pytest.approx(10.0)
