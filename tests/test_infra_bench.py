"""`run_gates_bench` on tiny data (slow: ~45 s): every gate fires after its fault and recovers."""

from __future__ import annotations

from pathlib import Path

import pytest

from autooptimizer.infra.testing import write_shift_datasets, write_test_profile
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
