"""The A/B judge gives the known verdicts on synthetic samples."""

from __future__ import annotations

import json

import numpy as np
import pytest

from autooptimizer.loop.abtest import ABConfig, ArmSnapshot, ArmStats, hodges_lehmann, judge, run_ab_test
from autooptimizer.profiles import load_profile

CFG = ABConfig(min_samples=20, alpha=0.05, max_p95_ms=800)


def _ndcg(mean: float, n: int, seed: int, sd: float = 0.12) -> list[float]:
    rng = np.random.default_rng(seed)
    return list(np.clip(rng.normal(mean, sd, n), 0, 1))


def _lat(median_ms: float, n: int, seed: int, sigma: float = 0.5) -> list[float]:
    """Per-request latencies (ms): log-normal around `median_ms`, like service times with a right tail."""
    rng = np.random.default_rng(seed)
    return list(median_ms * np.exp(rng.normal(0.0, sigma, n)))


# both arms equally fast (independent draws): the latency guard reads `ok`
LAT = {"control_latency": _lat(45, 60, 101), "treatment_latency": _lat(45, 60, 102)}


def _arms(c_lat: float | None = 100, t_lat: float | None = 105, c_err: float | None = 0.0,
          t_err: float | None = 0.0) -> tuple[ArmStats, ArmStats]:
    return (ArmStats(model_version="v1", samples=0, p95_latency_ms=c_lat, error_rate=c_err),
            ArmStats(model_version="v2", samples=0, p95_latency_ms=t_lat, error_rate=t_err))


def test_clear_win_passes() -> None:
    r = judge(*_arms(), _ndcg(0.40, 60, 1), _ndcg(0.60, 60, 2), CFG, **LAT)
    assert r.verdict == "pass", r.reasons
    assert r.quality.p_value_greater < 0.001
    assert r.quality.ci_low > 0 and r.quality.delta_mean == pytest.approx(
        r.treatment.mean_ndcg - r.control.mean_ndcg)
    assert r.control.samples == 60 and r.treatment.samples == 60


def test_clear_loss_fails() -> None:
    r = judge(*_arms(), _ndcg(0.60, 60, 3), _ndcg(0.35, 60, 4), CFG, **LAT)
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
    r = judge(*_arms(), same, list(same), CFG, **LAT)
    assert r.verdict == "inconclusive"
    assert r.quality.delta_mean == pytest.approx(0.0)
    # all-tied samples (e.g. every NDCG 1.0) do not crash the test
    r2 = judge(*_arms(), [1.0] * 30, [1.0] * 30, CFG)
    assert r2.verdict == "inconclusive" and r2.quality.p_value_greater == 1.0


def test_latency_shift_above_tolerance_fails_despite_quality_win() -> None:
    # treatment twice as slow per request (median 45 -> 90 ms): significant and far above max(20 % of 45, 25) ms
    r = judge(*_arms(), _ndcg(0.40, 60, 8), _ndcg(0.60, 60, 9), CFG,
              control_latency=_lat(45, 100, 1), treatment_latency=_lat(90, 100, 2))
    assert r.verdict == "fail"
    assert r.latency.status == "regressed" and r.latency.p_value_slower < 1e-10
    assert r.latency.allowed_shift_ms == pytest.approx(25.0)
    assert 30 < r.latency.ci_low_ms < r.latency.shift_ms < r.latency.ci_high_ms < 60
    assert any("latency regressed" in s for s in r.reasons)
    # the relative part scales with the control: at median 400 ms, 20 % (80 ms) is the allowed shift
    r2 = judge(*_arms(), _ndcg(0.40, 60, 8), _ndcg(0.60, 60, 9), CFG,
               control_latency=_lat(400, 100, 1, 0.1), treatment_latency=_lat(460, 100, 2, 0.1))
    assert r2.latency.allowed_shift_ms == pytest.approx(0.2 * r2.control.median_latency_ms)
    assert r2.latency.p_value_slower < 1e-10 and r2.latency.status == "ok" and r2.verdict == "pass"


def test_latency_gate_fails_even_when_control_is_as_slow() -> None:
    r = judge(*_arms(c_lat=900, t_lat=900), _ndcg(0.40, 60, 8), _ndcg(0.60, 60, 9), CFG, **LAT)
    assert r.verdict == "fail" and any("above the gate" in s for s in r.reasons)
    # without Prometheus the per-request samples' p95 is held against the gate
    r2 = judge(*_arms(c_lat=None, t_lat=None), _ndcg(0.40, 60, 8), _ndcg(0.60, 60, 9), CFG,
               control_latency=_lat(900, 60, 1, 0.1), treatment_latency=_lat(900, 60, 2, 0.1))
    assert r2.verdict == "fail" and r2.latency.status == "ok" and any("above the gate" in s for s in r2.reasons)


def test_equal_latencies_with_noisy_p95_points_do_not_fail() -> None:
    # one distribution (median 45 ms), two seeded draws of 100 whose p95 points differ by > 50 %; this draw is even
    # "significant" by chance (p < 0.05): the minimum effect is what keeps noise from failing the canary
    c, t = _lat(45, 100, 69), _lat(45, 100, 1069)
    assert np.quantile(t, 0.95) > 1.5 * np.quantile(c, 0.95)
    r = judge(*_arms(c_lat=float(np.quantile(c, 0.95)), t_lat=float(np.quantile(t, 0.95))),
              _ndcg(0.40, 60, 1), _ndcg(0.60, 60, 2), CFG, control_latency=c, treatment_latency=t)
    assert r.verdict == "pass", r.reasons
    assert r.latency.status == "ok" and r.latency.p_value_slower < 0.05 and abs(r.latency.shift_ms) < 10
    assert r.treatment.p95_latency_sample_ms > 1.5 * r.control.p95_latency_sample_ms


def test_significant_latency_shift_below_the_minimum_effect_does_not_fail() -> None:
    # 400 requests per arm, 45 -> 55 ms: p(slower) ~1e-38 but +10 ms < the allowed 25 ms
    r = judge(*_arms(), _ndcg(0.40, 60, 1), _ndcg(0.60, 60, 2), CFG,
              control_latency=_lat(45, 400, 3, 0.2), treatment_latency=_lat(55, 400, 4, 0.2))
    assert r.latency.p_value_slower < 1e-20 and 8 < r.latency.shift_ms < 12
    assert r.latency.status == "ok" and r.verdict == "pass", r.reasons
    # the same shift with a tolerance below it fails
    strict = CFG.model_copy(update={"latency_slack_ms": 5.0, "latency_tolerance_pct": 10.0})
    r2 = judge(*_arms(), _ndcg(0.40, 60, 1), _ndcg(0.60, 60, 2), strict,
               control_latency=_lat(45, 400, 3, 0.2), treatment_latency=_lat(55, 400, 4, 0.2))
    assert r2.latency.status == "regressed" and r2.verdict == "fail"


def test_too_few_latency_samples_make_a_win_inconclusive() -> None:
    r = judge(*_arms(), _ndcg(0.40, 60, 1), _ndcg(0.60, 60, 2), CFG,
              control_latency=_lat(45, 60, 1), treatment_latency=_lat(45, 19, 2))
    assert r.verdict == "inconclusive" and r.latency.status == "unknown" and r.latency.shift_ms is None
    assert any("latency comparison unknown" in s and "need 20" in s for s in r.reasons)
    # no latency samples at all (feedback without request_id) reads the same, never as ok
    r2 = judge(*_arms(), _ndcg(0.40, 60, 1), _ndcg(0.60, 60, 2), CFG)
    assert r2.verdict == "inconclusive" and r2.latency.status == "unknown"


def _issue_treatment_latency(n: int, seed: int) -> list[float]:
    """Median ~50 ms like the control's 45, but 12 % of requests land at 150-320 ms: a heavier tail."""
    rng = np.random.default_rng(seed)
    lat = 50 * np.exp(rng.normal(0.0, 0.45, n))
    tail = rng.random(n) < 0.12
    lat[tail] = rng.uniform(150, 320, int(tail.sum()))
    return list(lat)


def test_issue_input_clear_win_with_heavier_tailed_latency_passes_with_the_tradeoff(tmp_path) -> None:
    # the demo run from the issue: NDCG +0.16 with p ~1e-6; p95 99 ms (control) vs ~200 ms (treatment) made the
    # old point guard fail it, but the median shift is small
    c_lat, t_lat = _lat(45, 110, 13, 0.48), _issue_treatment_latency(110, 23)
    assert np.quantile(c_lat, 0.95) == pytest.approx(99, abs=3) and np.quantile(t_lat, 0.95) > 190
    r = judge(*_arms(c_lat=99.0, t_lat=197.0), _ndcg(0.38, 110, 30, sd=0.3), _ndcg(0.60, 110, 31, sd=0.3), CFG,
              control_latency=c_lat, treatment_latency=t_lat)
    assert r.verdict == "pass", r.reasons
    assert r.quality.delta_mean == pytest.approx(0.16, abs=0.04) and r.quality.p_value_greater < 1e-4
    assert any(s.startswith("treatment latency within tolerance") for s in r.reasons)
    assert r.latency.status == "ok" and 0 < r.latency.shift_ms < r.latency.allowed_shift_ms == 25.0
    t = r.tradeoff
    assert t.ndcg_gain == r.quality.delta_mean and t.latency_added_ms == r.latency.shift_ms
    assert t.latency_added_pct == pytest.approx(100 * r.latency.shift_ms / r.control.median_latency_ms)
    line = f"trade-off: {t.ndcg_gain:+.3f} NDCG@10 for {t.latency_added_ms:+.0f} ms median latency"
    assert any(s.startswith(line) and f"({t.latency_added_pct:+.0f} %)" in s for s in r.reasons), r.reasons
    data = json.loads(r.write(tmp_path / "ab_test_results.json").read_text())
    assert data["tradeoff"]["latency_added_ms"] == pytest.approx(r.latency.shift_ms)
    assert data["latency"]["status"] == "ok" and data["treatment"]["latency_samples"] == 110


def test_hodges_lehmann_known_answer() -> None:
    # y = x + 10 exactly: every pairwise difference set is centred on 10
    x = np.arange(1.0, 31.0)
    shift, lo, hi = hodges_lehmann(x, x + 10, 0.95)
    assert shift == pytest.approx(10.0) and lo < 10 < hi
    # n = m = 30: C = floor(450 - 1.96 * sqrt(900 * 61 / 12)) = 316, so the CI is [D_317, D_584] of the sorted diffs
    d = np.sort(((x + 10)[:, None] - x[None, :]).ravel())
    assert (lo, hi) == (d[316], d[583])


def test_error_regression_fails() -> None:
    r = judge(*_arms(c_err=0.0, t_err=0.2), _ndcg(0.40, 60, 10), _ndcg(0.60, 60, 11), CFG, **LAT)
    assert r.verdict == "fail"
    assert any("error rate" in s for s in r.reasons)
    # a guard regression fails even before the minimum sample count
    r2 = judge(*_arms(c_err=0.0, t_err=0.5), _ndcg(0.4, 3, 1), _ndcg(0.6, 3, 2), CFG)
    assert r2.verdict == "fail"


def test_unknown_guard_turns_a_win_into_inconclusive() -> None:  # here: the error rate
    r = judge(*_arms(t_err=None), _ndcg(0.40, 60, 12), _ndcg(0.60, 60, 13), CFG, **LAT)
    assert r.verdict == "inconclusive"
    assert any("unknown" in s for s in r.reasons)


def test_min_effect_blocks_tiny_wins() -> None:
    cfg = CFG.model_copy(update={"min_effect": 0.5})
    r = judge(*_arms(), _ndcg(0.40, 200, 14), _ndcg(0.50, 200, 15), cfg, **LAT)
    assert r.verdict == "inconclusive"


def test_bootstrap_is_deterministic_under_seed() -> None:
    a, b = _ndcg(0.4, 40, 16), _ndcg(0.5, 40, 17)
    r1, r2 = judge(*_arms(), a, b, CFG, **LAT), judge(*_arms(), a, b, CFG, **LAT)
    assert (r1.quality.ci_low, r1.quality.ci_high) == (r2.quality.ci_low, r2.quality.ci_high)


def test_config_from_profile_reads_thresholds() -> None:
    prod = load_profile("prod")
    cfg = ABConfig.from_profile(prod)
    assert cfg.min_samples == prod.ab_test.min_samples
    assert cfg.max_p95_ms == prod.gates.p95_latency_ms
    assert cfg.max_duration_seconds == prod.ab_test.max_duration_seconds
    assert cfg.latency_tolerance_pct == prod.ab_test.latency_tolerance_pct
    assert cfg.latency_slack_ms == prod.ab_test.latency_slack_ms
    assert cfg.latency_min_samples == prod.ab_test.latency_min_samples
    assert cfg.error_tolerance == prod.ab_test.error_tolerance


def test_latency_tolerances_come_from_the_profile_file(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    (tmp_path / "dev.yaml").write_text("name: dev\nabTest:\n  latencyTolerancePct: 50\n  latencySlackMs: 7\n"
                                      "  latencyMinSamples: 30\n  errorTolerance: 0.02\n")
    monkeypatch.setenv("AUTOOPT_PROFILES_DIR", str(tmp_path))
    cfg = ABConfig.from_profile(load_profile("dev"))
    assert (cfg.latency_tolerance_pct, cfg.latency_slack_ms, cfg.latency_min_samples, cfg.error_tolerance) == (
        50, 7, 30, 0.02)


class _GrowingSource:
    """Samples arrive over (fake) time: `per_tick` per arm per poll."""

    def __init__(self, per_tick: int, control_mean: float, treat_mean: float) -> None:
        self.ticks = 0
        self.per_tick = per_tick
        self.data = {"v1": _ndcg(control_mean, 500, 20), "v2": _ndcg(treat_mean, 500, 21)}
        self.latency = {"v1": _lat(40, 500, 22), "v2": _lat(40, 500, 23)}

    def snapshot(self, model_version: str, since: float) -> ArmSnapshot:
        n = self.ticks * self.per_tick
        return ArmSnapshot(ndcg=self.data[model_version][:n], latency_ms=self.latency[model_version][:n],
                           p95_latency_ms=90.0, error_rate=0.0)


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
