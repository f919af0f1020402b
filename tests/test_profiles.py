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


def test_every_tier_sets_the_decision_rules_in_yaml() -> None:
    """The minimum samples, N consecutive readings and the guards' minimum are explicit in each operator file."""
    import yaml

    from autooptimizer.profiles import profile_path

    for name in ("dev", "staging", "prod"):
        raw = yaml.safe_load(profile_path(name).read_text())
        assert set(raw["gates"]["minSamples"]) == {"ndcgDrop", "p95Latency", "costBudget", "retries"}
        assert {"consecutiveReadings", "readIntervalSeconds"} <= set(raw["gates"])
        assert "minGuardRequests" in raw["abTest"]
        p = load_profile(name)
        assert p.gates.consecutive_readings >= 2 and p.gates.min_samples.ndcg_drop >= 50
        assert p.gates.min_samples.p95_latency >= 20  # fewer than 20 samples: the "p95" is the maximum
        assert p.ab_test.min_guard_requests >= 1
        # the agents' run budgets are explicit too (docs/agents.md ## Budgets), every key of them
        assert set(raw["llm"]) == {f.alias for f in type(p.llm).model_fields.values()}
        assert p.llm.max_turns >= 22 and p.llm.max_identical_tool_calls >= 2  # the offline fix fits


@pytest.mark.parametrize("gates, needle", [
    ("{minSamples: {ndcgDrop: 0}}", "ndcgDrop"),
    ("{minSamples: {ndcgDrop: -5}}", "ndcgDrop"),
    ("{minSamples: {ndcgDrop: many}}", "ndcgDrop"),
    ("{minSamples: {latency: 20}}", "latency"),  # a typo is not silently a default
    ("{consecutiveReadings: 0}", "consecutiveReadings"),
    ("{readIntervalSeconds: 0.1}", "readIntervalSeconds"),
])
def test_bad_decision_rules_are_rejected_naming_the_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                        gates: str, needle: str) -> None:
    (tmp_path / "prod.yaml").write_text(f"name: prod\ngates: {gates}\n")
    monkeypatch.setenv("AUTOOPT_PROFILES_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match=needle) as err:
        load_profile("prod")
    assert "prod.yaml" in err.value.problem and "docs/operations.md" in err.value.fix


def test_guard_minimum_is_validated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "prod.yaml").write_text("name: prod\nabTest: {minGuardRequests: 0}\n")
    monkeypatch.setenv("AUTOOPT_PROFILES_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match="minGuardRequests"):
        load_profile("prod")
    (tmp_path / "prod.yaml").write_text("name: prod\nabTest: {minGuardRequests: 40}\ngates: {minSamples: "
                                        "{ndcgDrop: 300}, consecutiveReadings: 4}\n")
    p = load_profile("prod")
    assert (p.ab_test.min_guard_requests, p.gates.min_samples.ndcg_drop, p.gates.consecutive_readings) == (40, 300, 4)
    assert p.gates.min_samples.retries == 10  # keys not given keep their defaults
