"""Faults during a cycle: each ends in a safe, consistent state with an error a person can act on."""

from __future__ import annotations

from pathlib import Path

import pytest

from autooptimizer.reliability.faults import FAULTS, inject

FAST = ["search_restarted", "gitops_unreachable", "disk_full", "kill_switch"]


@pytest.mark.parametrize("name", FAST)
def test_fault_mid_cycle_ends_safe_with_a_clear_error(tmp_path: Path, name: str) -> None:
    out = inject(FAULTS[name], tmp_path)
    assert out.safe, out.problems
    assert out.clear_error, out.reason
    assert out.outcome in FAULTS[name].outcomes


@pytest.mark.prometheus
def test_prometheus_stopped_mid_ab_is_inconclusive_and_restored(tmp_path: Path) -> None:
    out = inject(FAULTS["prometheus_stopped"], tmp_path)
    assert out.safe, out.problems
    assert out.outcome == "ab_inconclusive" and "unknown" in out.reason


@pytest.mark.slow
def test_mlflow_locked_keeps_the_promotion_and_aliases_json_in_step(tmp_path: Path) -> None:
    out = inject(FAULTS["mlflow_locked"], tmp_path)
    assert out.safe, out.problems
    assert out.outcome == "promoted" and "locked" in out.reason


def test_the_gitops_repository_is_never_silently_recreated(tmp_path: Path, monkeypatch) -> None:
    """The defect the gitops fault found: a lost local remote used to be re-initialised empty, and the next
    promotion went into a repository nothing else reads."""
    from autooptimizer.errors import AutoOptError
    from autooptimizer.loop.gitops import GitOpsRepo, HelmPatch
    from autooptimizer.settings import get_settings

    repo = GitOpsRepo(get_settings(), env="dev")
    repo.commit_patch(HelmPatch(model_version="v-a"), "first")
    (get_settings().home / "gitops" / "deploy.git").rename(tmp_path / "elsewhere.git")
    with pytest.raises(AutoOptError, match="missing or unreachable"):
        GitOpsRepo(get_settings(), env="dev").commit_patch(HelmPatch(model_version="v-b"), "second")
    assert not (get_settings().home / "gitops" / "deploy.git").exists()
