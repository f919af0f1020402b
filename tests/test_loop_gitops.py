"""A copied or moved AUTOOPT_HOME: its GitOps clone follows the home's own repository, never the original's."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from autooptimizer.loop.gitops import GitOpsRepo, HelmPatch
from autooptimizer.settings import get_settings


def test_a_copied_home_commits_to_its_own_repository(autoopt_home: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    original = GitOpsRepo(get_settings(), "dev")
    base = original.commit_patch(HelmPatch(model_version="m-1"), "Deploy m-1")
    copy = tmp_path / "copied-home"
    shutil.copytree(autoopt_home, copy, symlinks=True)
    monkeypatch.setenv("AUTOOPT_HOME", str(copy))
    get_settings.cache_clear()

    moved = GitOpsRepo(get_settings(), "dev")
    assert moved.read_patch() == HelmPatch(model_version="m-1")
    moved.commit_patch(HelmPatch(model_version="m-2"), "Promote m-2")
    assert moved.read_patch() == HelmPatch(model_version="m-2")
    assert moved._git("remote", "get-url", "origin") == str(copy / "gitops" / "deploy.git")
    assert original.head() == base and original.read_patch() == HelmPatch(model_version="m-1"), \
        "the original home's desired state is untouched"
