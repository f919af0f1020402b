"""Environment profiles: the three tiers load, differ where the product says, and bad files are rejected."""

from __future__ import annotations

from pathlib import Path

import pytest

from autooptimizer.errors import ConfigError
from autooptimizer.profiles import load_profile


def test_tiers_differ_as_the_product_requires() -> None:
    dev, staging, prod = (load_profile(n) for n in ("dev", "staging", "prod"))
    assert dev.loop.scheduler is False and dev.loop.mock_signals is True
    assert staging.loop.auto_promote is False and staging.ab_test.enabled is True
    assert prod.loop.auto_promote is True and prod.loop.rollback_on_degrade is True and prod.cost.integration is True
    for p in (dev, staging, prod):
        assert p.gates.ndcg_drop_pct == 3.0 and p.gates.p95_latency_ms == 800
        assert p.gates.cost_budget_pct == 80.0 and p.gates.max_retries == 3


def test_unknown_key_is_an_error_naming_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "dev.yaml").write_text("name: dev\ngates:\n  ndcgDropPcnt: 5\n")
    monkeypatch.setenv("AUTOOPT_PROFILES_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match="dev.yaml"):
        load_profile("dev")


def test_out_of_range_value_is_rejected(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "prod.yaml").write_text("name: prod\nabTest:\n  canaryWeight: 0.9\n")
    monkeypatch.setenv("AUTOOPT_PROFILES_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match="canary"):
        load_profile("prod")


def test_missing_profile_names_the_fix() -> None:
    with pytest.raises(ConfigError, match="dev, staging or prod"):
        load_profile("qa")
