"""GitOps with real git: commits land in the bare repo, reverts restore the previous patch."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from autooptimizer.loop.gitops import GitOpsRepo, HelmPatch
from autooptimizer.settings import get_settings


def _remote_show(remote: str, rev: str, path: str) -> str:
    return subprocess.run(["git", "--git-dir", remote, "show", f"{rev}:{path}"], capture_output=True, text=True,
                          check=True).stdout


def test_patch_yaml_round_trip() -> None:
    p = HelmPatch(model_version="m-2", canary_version="m-3", canary_weight=0.2, replicas=3, rerank_depth=20)
    assert HelmPatch.from_yaml(p.to_yaml(header="hello")) == p
    assert p.values()["search"]["canary"] == {"modelVersion": "m-3", "weight": 0.2}
    assert HelmPatch(model_version="m").values()["search"]["canary"]["weight"] == 0.0


def test_commit_push_and_revert_in_local_bare_repo(autoopt_home: Path) -> None:
    repo = GitOpsRepo(get_settings(), "dev")
    assert repo.read_patch() is None
    first = repo.commit_patch(HelmPatch(model_version="m-1"), "Deploy m-1", cycle_id="si_2026_01_01_001")
    second = repo.commit_patch(HelmPatch(model_version="m-2", replicas=2), "Promote m-2", cycle_id="si_2026_01_01_002")
    assert first != second
    remote = str(autoopt_home / "gitops" / "deploy.git")
    assert "modelVersion: m-2" in _remote_show(remote, "main", repo.rel_path)
    # an unchanged patch makes no commit
    assert repo.commit_patch(HelmPatch(model_version="m-2", replicas=2), "again") == second

    new_head = repo.revert(second, "NDCG dropped", cycle_id="si_2026_01_01_002")
    assert repo.read_patch() == HelmPatch(model_version="m-1")
    assert "modelVersion: m-1" in _remote_show(remote, "main", repo.rel_path)
    log = repo.log()
    assert log[0].sha == new_head and log[0].reverts == second and log[0].cycle_id == "si_2026_01_01_002"
    assert [c.cycle_id for c in log[1:]] == ["si_2026_01_01_002", "si_2026_01_01_001"]


def test_revert_cycle_is_idempotent(autoopt_home: Path) -> None:
    repo = GitOpsRepo(get_settings(), "dev")
    repo.commit_patch(HelmPatch(model_version="m-1"), "base", cycle_id="c0")
    repo.commit_patch(HelmPatch(model_version="m-1", canary_version="m-2", canary_weight=0.5), "canary", cycle_id="c1")
    repo.commit_patch(HelmPatch(model_version="m-2"), "promote", cycle_id="c1")
    assert len(repo.revert_cycle("c1", "abort")) == 2
    assert repo.read_patch() == HelmPatch(model_version="m-1")
    assert repo.revert_cycle("c1", "abort again") == []


def test_crashed_half_written_checkout_is_reset(autoopt_home: Path) -> None:
    repo = GitOpsRepo(get_settings(), "dev")
    repo.commit_patch(HelmPatch(model_version="m-1"), "base")
    (repo.checkout / repo.rel_path).write_text("garbage: [")  # a crash between write and commit
    assert repo.read_patch() == HelmPatch(model_version="m-1")


def test_configured_remote_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    remote = tmp_path / "elsewhere.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(remote)], check=True)
    seed = tmp_path / "seed"
    subprocess.run(["git", "clone", "-q", str(remote), str(seed)], check=True, capture_output=True)
    (seed / "README.md").write_text("x\n")
    for cmd in (["add", "README.md"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"],
                ["push", "-q", "origin", "HEAD:main"]):
        subprocess.run(["git", *cmd], cwd=seed, check=True)
    monkeypatch.setenv("AUTOOPT_GITOPS_REMOTE", str(remote))
    get_settings.cache_clear()
    repo = GitOpsRepo(get_settings(), "dev")
    sha = repo.commit_patch(HelmPatch(model_version="m-9"), "deploy")
    assert "m-9" in _remote_show(str(remote), sha, repo.rel_path)
    assert not (get_settings().home / "gitops" / "deploy.git").exists()


def test_concurrent_remote_change_is_rebased(autoopt_home: Path, tmp_path: Path) -> None:
    repo = GitOpsRepo(get_settings(), "dev")
    repo.commit_patch(HelmPatch(model_version="m-1"), "base")
    other = tmp_path / "other"
    subprocess.run(["git", "clone", "-q", repo.remote, str(other)], check=True, capture_output=True)
    (other / "NOTES.md").write_text("a human edit\n")
    for cmd in (["add", "NOTES.md"], ["-c", "user.name=h", "-c", "user.email=h@h", "commit", "-qm", "human"],
                ["push", "-q", "origin", "HEAD:main"]):
        subprocess.run(["git", *cmd], cwd=other, check=True)
    repo.commit_patch(HelmPatch(model_version="m-2"), "promote")
    files = subprocess.run(["git", "--git-dir", repo.remote, "ls-tree", "-r", "--name-only", "main"],
                           capture_output=True, text=True, check=True).stdout.split()
    assert "NOTES.md" in files and repo.read_patch() == HelmPatch(model_version="m-2")
