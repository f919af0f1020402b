"""`run_gates_bench` on tiny data (slow: ~45 s): every gate fires after its fault and recovers."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.live_stack import write_shift_datasets, write_test_profile

from autooptimizer.settings import get_settings


@pytest.mark.slow
@pytest.mark.prometheus
def test_gates_bench_tiny(tmp_path: Path, monkeypatch) -> None:
    from autooptimizer.infra.bench import run_gates_bench
    from autooptimizer.search.model_store import ModelSpec, save

    monkeypatch.setenv("AUTOOPT_PROFILES_DIR", str(write_test_profile(tmp_path / "profiles")))
    get_settings.cache_clear()
    good, bad = write_shift_datasets(tmp_path / "data")
    save(ModelSpec(version="tiny-bm25", kind="bm25", fusion_weight=0.5, rerank_depth=20))
    result = run_gates_bench(trials=1, rate=20, latency_seconds=5, model="tiny-bm25", healthy=str(good),
                             shifted=str(bad), split=None, progress=False, fire_timeout=30)
    assert result.latency is not None and result.latency.requests >= 80 and result.latency.errors == 0
    assert result.latency.client_p95_ms < 800
    for name, times in result.gates.items():
        assert times.fire_s[0] is not None and times.fire_s[0] < 15, name
        assert times.recover_s[0] is not None, name
    assert "fire p50 s" in result.render()


# -- the A/A measurement: the rules applied offline to recorded readings ------------------------------------------
def test_count_starts_resets_after_each_start() -> None:
    from autooptimizer.infra.bench import count_starts

    f, o, u = "firing", "ok", "unknown"
    assert count_starts([f, f, f, f, f, f, f], 3) == 2  # the 3rd and the 6th reading start; the 7th is 1 of 3
    assert count_starts([f, f, o, f, f, u, f, f], 3) == 0  # the incident's shape: mostly firing, never 3 in a row
    assert count_starts([f, o, f, u, f], 1) == 3


def test_minimum_and_streak_on_known_readings() -> None:
    from autooptimizer.infra.bench import AABench, AAReading, judge_rule, summarise_aa, with_minimum
    from autooptimizer.profiles import load_profile

    def r(t: float, status: str, cur: float, base: float) -> AAReading:
        return AAReading(t=t, status=status, value=None, samples={"current": cur, "baseline": base})

    assert with_minimum(r(0, "firing", 60, 12), 50) == "unknown"  # the incident: 12 in the baseline window
    assert with_minimum(r(0, "firing", 60, 50), 50) == "firing"
    assert with_minimum(AAReading(t=0, status="ok", value=1.0, samples={"requests": None}), 1) == "unknown"
    # ten readings 1 s apart: firing on 40 feedback for 4 s, then firing on 120 for 6 s
    rs = [r(t, "firing", 40 if t < 4 else 120, 200) for t in range(10)]
    rule = judge_rule("ndcg_drop", rs, 100, 2, stride=2, seconds=10)
    assert (rule.firing_share, rule.unknown_share) == (0.6, 0.4)
    # every 2nd reading (two phases): phase 0 sees t=4,6,8 firing -> 1 start; phase 1 sees 5,7,9 -> 1 start
    assert rule.starts == 1.0 and rule.starts_per_hour == 360.0
    assert judge_rule("ndcg_drop", rs, 1, 2, stride=1, seconds=10).starts == 5.0
    profile = load_profile("dev")
    out = AABench(env="dev", model="m", dataset="d", rate=2, seconds=10, read_every_s=1, cadence_s=2, window_s=3,
                  baseline_window_s=3, profile_min_samples={}, profile_n=2)
    out = summarise_aa(out, {"ndcg_drop": rs}, profile)
    g = out.gates["ndcg_drop"]
    assert (g.readings, g.firing_raw, g.firing_raw_steady, g.first_fire_s) == (10, 1.0, 1.0, 0.0)
    assert g.firing_profile == 0.6 and g.starts_profile == 1.0  # the dev minimum (100) and N = 2
    assert "ndcg_drop" in out.render()


@pytest.mark.slow
@pytest.mark.prometheus
def test_aa_bench_tiny(tmp_path: Path, monkeypatch) -> None:
    """A short A/A on tiny data: unchanged healthy traffic fires no latency, cost or retries reading."""
    from autooptimizer.infra.bench import MIN_GRID, N_GRID, run_aa_bench
    from autooptimizer.search.model_store import ModelSpec, save

    monkeypatch.setenv("AUTOOPT_PROFILES_DIR", str(write_test_profile(tmp_path / "profiles")))
    get_settings.cache_clear()
    good, _ = write_shift_datasets(tmp_path / "data")
    save(ModelSpec(version="tiny-bm25", kind="bm25", fusion_weight=0.5, rerank_depth=20))
    out = run_aa_bench(seconds=15, rate=20, model="tiny-bm25", dataset=str(good), split=None, progress=False)
    assert out.requests >= 200 and out.feedback == out.requests
    assert set(out.gates) == {"ndcg_drop", "p95_latency", "cost_budget", "retries"}
    for name in ("p95_latency", "cost_budget", "retries"):
        assert out.gates[name].firing_raw == 0.0 and out.gates[name].readings >= 10, name
    assert len(out.sweep) == sum(len(v) for v in MIN_GRID.values()) * len(N_GRID)
    assert (out.cadence_s, out.profile_n) == (1.0, 2)  # from write_test_profile
