"""A deploy the loop did not make (an operator's GitOps commit) is watched before any remedy and rolled back to the
champion when it degrades: real cycles against the tiny search service, real git, PDP and audit log."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.tiny_stack import start_tiny_service

from autooptimizer.loop.cycle import CycleOptions, CycleRunner
from autooptimizer.loop.gitops import HelmPatch
from autooptimizer.loop.paths.watch import unwatched_deploy
from autooptimizer.loop.release import Release
from autooptimizer.search import aliases
from autooptimizer.testing import SyntheticSource, TinyService


@pytest.fixture()
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TinyService]:
    svc = start_tiny_service(tmp_path, monkeypatch, ["v-a", "v-b", "v-bad"])
    aliases.set_alias(aliases.CHAMPION, "v-a")
    yield svc
    svc.stop()


def _operator_commit(version: str) -> str:
    rel = Release()
    current, _ = rel.current()
    return rel.deploy(current.model_copy(update={"model_version": version}), f"Promote {version} (manual)").revision


def test_operator_bad_commit_is_watched_first_and_rolled_back_to_the_champion(service: TinyService) -> None:
    sha = _operator_commit("v-bad")
    found = unwatched_deploy(CycleRunner())
    assert found is not None and (found.revision, found.new, found.old) == (sha, "v-bad", "v-a")

    runner = CycleRunner(source=SyntheticSource({"v-a": 0.6, "v-bad": 0.1}))
    # the scheduler's cycle for a firing latency gate: the unwatched deploy comes first, not a scale-up
    rec = runner.run(CycleOptions(trigger="gate", gate="p95_latency", watch_seconds=2))
    assert rec.outcome == "rolled_back", rec.summary.get("reason")
    assert rec.gate == "deploy_watch" and rec.summary["watched_revision"] == sha
    assert [s.name for s in rec.steps] == ["monitor", "supervisor", "watch", "rollback"]
    assert service.service.routing.stable.version == "v-a"
    assert Release().git.read_patch() == HelmPatch(model_version="v-a")
    assert aliases.get_alias(aliases.CHAMPION) == "v-a"
    assert Release().consistent()[0]
    assert unwatched_deploy(CycleRunner()) is None  # git serves the champion again: nothing left to watch


def test_unwatched_deploy_without_a_gate_is_watched_and_a_good_one_adopted(service: TinyService) -> None:
    sha = _operator_commit("v-b")
    runner = CycleRunner(source=SyntheticSource({"v-a": 0.5, "v-b": 0.55}))
    rec = runner.run(CycleOptions(trigger="schedule", watch_seconds=1))  # no gate is firing (unknown)
    assert rec.outcome == "kept", rec.summary.get("reason")
    assert rec.summary["watched_revision"] == sha
    assert service.service.routing.stable.version == "v-b"
    assert aliases.get_alias(aliases.CHAMPION) == "v-b", "a deploy that survived its watch becomes the champion"
    again = runner.run(CycleOptions(trigger="schedule"))
    assert again.outcome == "no_action" and again.gate is None


def test_loop_made_or_already_watched_deploys_are_not_watched_again(service: TinyService) -> None:
    assert unwatched_deploy(CycleRunner()) is None  # serving == champion
    rel = Release()
    current, _ = rel.current()
    rel.deploy(current.model_copy(update={"model_version": "v-b"}), "Promote v-b", cycle_id="c-loop")
    assert unwatched_deploy(CycleRunner()) is None  # the loop's own cycle made it
    sha = _operator_commit("v-bad")
    runner = CycleRunner()
    found = unwatched_deploy(runner)
    assert found is not None and (found.revision, found.new, found.old) == (sha, "v-bad", "v-a")
    rec = runner.journal.new_cycle(trigger="manual", env="dev", gate="deploy_watch")
    runner.journal.finish(rec.id, "finished", "kept", summary={"watched_revision": sha})
    assert unwatched_deploy(runner) is None  # a cycle watched that commit already
