"""Crash at every step: SIGKILL a cycle at its checkpoints, recover, and the deployment must be consistent.

The CI run crashes each path at every point inside its deploy and rollback units and at the boundaries of the
step that changes the deployment; `-m slow` (and `autoopt bench faults`) crash every checkpoint of every path.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from autooptimizer.reliability.crash import PATHS, crash_once, enumerate_points, run_crash_suite

CHANGE_STEPS = {"latency": "scale", "cost": "switch_variant", "release": "promote", "retries": "rollback",
                "deploy_watch": "rollback"}


def test_each_path_reaches_its_journaled_steps_and_unit_points(tmp_path: Path) -> None:
    expected = {
        "latency": ["monitor", "supervisor", "scale"],
        "cost": ["monitor", "supervisor", "switch_variant"],
        "release": ["monitor", "supervisor", "challenger", "canary", "ab_test", "promote", "watch", "champion_alias"],
        "retries": ["monitor", "supervisor", "diagnose_errors", "rollback"],
        "deploy_watch": ["monitor", "supervisor", "watch", "rollback"],
    }
    for name, steps in expected.items():
        points = enumerate_points(PATHS[name], tmp_path / name)
        names = [p for p, _ in points]
        assert [n.split(":")[1] for n in names if n.endswith(":start")] == steps, name
        assert all(f"step:{s}:end" in names for s in steps), name
        unit = "rollback" if name in ("retries", "deploy_watch") else "deploy"
        assert f"{unit}:after_commit" in names and f"{unit}:after_apply" in names, name
    release = [p for p in enumerate_points(PATHS["release"], tmp_path / "again")]
    assert ("deploy:after_commit", 2) in release, "canary and promotion are two deploy units"


def _ci_subset(path: str, points: list[tuple[str, int]]) -> list[tuple[str, int]]:
    step = CHANGE_STEPS[path]
    return [(p, k) for p, k in points if ":after_" in p or p in (f"step:{step}:start", f"step:{step}:end")]


def test_crashes_around_every_deployment_change_are_recovered() -> None:
    report = run_crash_suite(points=_ci_subset)
    bad = [o for o in report.outcomes if not o.consistent]
    assert not bad, [o.model_dump() for o in bad]
    assert report.tried == report.consistent >= 20
    assert set(report.per_path) == set(PATHS)


def test_a_crash_that_never_reaches_its_point_is_reported(tmp_path: Path) -> None:
    """The suite can fail: a point the cycle never reaches is not counted as consistent."""
    out = crash_once(PATHS["latency"], "step:no-such-step:start", 1, tmp_path, timeout=60)
    assert not out.reached and not out.consistent and "never reached" in out.problems[0]


@pytest.mark.slow
def test_every_checkpoint_of_every_path() -> None:
    report = run_crash_suite()
    bad = [o for o in report.outcomes if not o.consistent]
    assert not bad, [o.model_dump() for o in bad]
    assert report.tried >= 50
