"""Failure modes 7 and 8: a rollback restores the whole safe point, and commit + apply are one unit on every path.

Real search service (tiny corpus, cheap bm25 versions), real git, real registry, PDP and audit log. After every
rollback the service must serve exactly git's desired state, which must equal the state before the change (stable,
canary, weight, replicas, variant), and the registry's `champion` must name what serves.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from autooptimizer.loop.cycle import CycleOptions, CycleRunner
from autooptimizer.loop.gitops import HelmPatch
from autooptimizer.loop.release import Release
from autooptimizer.search import aliases, model_store
from autooptimizer.settings import get_settings
from autooptimizer.testing import SyntheticSource, TinyService, make_versions
from autooptimizer.tools import load_all_tools

BEFORE = HelmPatch(model_version="v-a", replicas=1)


@pytest.fixture()
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TinyService]:
    monkeypatch.setenv("AUTOOPT_PROMETHEUS_URL", "http://127.0.0.1:9")  # no Prometheus: gates read unknown
    make_versions(["v-a", "v-b", "v-c"])
    aliases.set_alias(aliases.CHAMPION, "v-a")
    svc = TinyService(tmp_path, "v-a")
    monkeypatch.setenv("AUTOOPT_SEARCH_PORT", str(svc.server.port))
    get_settings.cache_clear()
    Release().current()  # adopt the serving state as the GitOps baseline
    yield svc
    svc.stop()


def _promote_b() -> str:
    """A real promotion cycle (canary -> A/B -> promote -> watch -> champion moved); returns its id."""
    rec = CycleRunner(source=SyntheticSource({"v-a": 0.4, "v-b": 0.7})).run(
        CycleOptions(gate="ndcg_drop", challenger="v-b", watch_seconds=1))
    assert rec.outcome == "promoted", rec.summary.get("reason")
    assert aliases.get_alias(aliases.CHAMPION) == "v-b"
    return rec.id


def _rollback(**args: object):  # noqa: ANN202
    return load_all_tools().call("devops", "rollback_deployment", {"reason": "test", **args})


def _assert_serves(service: TinyService, patch: HelmPatch) -> None:
    rel = Release()
    ok, desired, state = rel.consistent()
    assert desired == patch, "git's desired state"
    assert ok, f"the service serves {state}, git says {desired}"
    routing = service.service.routing
    assert routing.stable.version == patch.model_version
    assert (routing.canary.version if routing.canary else None) == patch.canary_version
    assert service.service.replicas == patch.replicas and service.service.rerank_depth == patch.rerank_depth


def test_rollback_without_cycle_id_restores_the_whole_safe_point(service: TinyService) -> None:
    """The reported input: after a promotion cycle, `rollback_deployment` with no cycle id used to revert only the
    promote commit, leaving the promoted version as a 50 % canary."""
    _promote_b()
    res = _rollback()
    assert (res.decision, res.error) == ("permit", None), res.error
    assert res.result["stable"] == "v-a" and res.result["canary"] is None
    _assert_serves(service, BEFORE)
    assert aliases.get_alias(aliases.CHAMPION) == "v-a", "champion follows what serves again"


def test_rollback_of_the_canary_commit_also_restores_the_safe_point(service: TinyService) -> None:
    """Variant: name an earlier commit of the same cycle (the canary) instead of the latest."""
    cid = _promote_b()
    canary_sha = next(c.sha for c in Release().git.log() if c.cycle_id == cid and c.subject.startswith("Canary"))
    assert _rollback(revision=canary_sha).error is None
    _assert_serves(service, BEFORE)


def test_rollback_restores_replicas_variant_and_canary_weight(service: TinyService) -> None:
    """Variant: a cycle that changed every field; the safe point comes back field for field."""
    rel = Release()
    start = HelmPatch(model_version="v-a", replicas=2, rerank_depth=30)
    rel.deploy(start, "operator: a tuned baseline")
    journal = rel.journal
    cycle = journal.new_cycle(trigger="test", env="dev")
    for patch in (start.model_copy(update={"replicas": 4}),
                  start.model_copy(update={"replicas": 4, "rerank_depth": 12}),
                  start.model_copy(update={"replicas": 4, "rerank_depth": 12, "canary_version": "v-c",
                                           "canary_weight": 0.5})):
        rel.deploy(patch, "cycle change", cycle_id=cycle.id)
    assert _rollback().error is None  # the latest commit belongs to the cycle: its whole safe point returns
    _assert_serves(service, start)
    assert Release().git.revert_cycle(cycle.id, "again") == [], "the rollback is recorded as undoing every commit"


def test_retries_path_rolls_back_the_whole_promotion(service: TinyService) -> None:
    _promote_b()
    rec = CycleRunner().run(CycleOptions(gate="retries"))
    assert rec.outcome == "rolled_back", rec.summary.get("reason")
    _assert_serves(service, BEFORE)
    assert aliases.get_alias(aliases.CHAMPION) == "v-a"


def test_deploy_watch_rolls_back_an_operators_commit_to_the_state_before_it(service: TinyService) -> None:
    _promote_b()
    before = Release().git.read_patch()
    Release().deploy(before.model_copy(update={"model_version": "v-c", "replicas": 3}), "operator: try v-c")
    runner = CycleRunner(source=SyntheticSource({"v-b": 0.7, "v-c": 0.1}))
    rec = runner.run(CycleOptions(gate="deploy_watch", watch_seconds=3))
    assert rec.outcome == "rolled_back", rec.summary.get("reason")
    _assert_serves(service, before)
    assert aliases.get_alias(aliases.CHAMPION) == "v-b", "operator commits never moved the champion"


def test_a_rollback_to_a_deleted_version_changes_nothing(service: TinyService) -> None:
    """The reported input for mode 8: the target was deleted; the service used to 404 after git was reverted."""
    _promote_b()
    head = Release().git.head()
    shutil.rmtree(model_store.version_dir("v-a"))  # deleted behind the registry's back
    res = _rollback()
    assert not res.ok and "not stored" in res.error and "nothing was changed" in res.error
    assert Release().git.head() == head
    _assert_serves(service, HelmPatch(model_version="v-b"))


def test_a_rollback_the_service_refuses_is_undone_in_git(service: TinyService) -> None:
    """Variant: the version is stored but cannot be loaded; the apply fails after the commit, so the commit is
    reverted and what served before is re-applied: git and the service agree on the pre-rollback state."""
    _promote_b()
    (model_store.version_dir("v-a") / "model.json").write_text("{ broken")
    res = _rollback()
    assert not res.ok and res.error
    _assert_serves(service, HelmPatch(model_version="v-b"))
    assert aliases.get_alias(aliases.CHAMPION) == "v-b", "the registry did not move either"


def test_a_rollback_while_the_service_is_down_leaves_git_unchanged(service: TinyService) -> None:
    _promote_b()
    desired = Release().git.read_patch()
    service.stop()
    res = _rollback()
    assert not res.ok and "unreachable" in res.error
    assert Release().git.read_patch() == desired, "git was returned to the state the (down) service last had"
    assert aliases.get_alias(aliases.CHAMPION) == "v-b"


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_nothing_to_roll_back_on_a_fresh_home_is_a_clear_answer(autoopt_home: Path, env: str) -> None:
    res = load_all_tools().call("devops", "rollback_deployment", {"reason": "p95 regressed"}, env=env)
    assert res.decision == "permit" and not res.ok
    assert "nothing to roll back to" in res.error and "fatal" not in res.error and "rev-parse" not in res.error


def test_rolling_back_the_first_deployment_is_a_clear_answer(service: TinyService) -> None:
    first = Release().git.log()[-1].sha
    res = _rollback(revision=first)
    assert "nothing to roll back to" in res.error and "first deployment" in res.error
    unknown = _rollback(revision="0123456789abcdef0123456789abcdef01234567")
    assert "not a deployment" in unknown.error and "fatal" not in unknown.error


def test_chat_rollback_on_a_fresh_home_answers_in_words(autoopt_home: Path) -> None:
    """The reported edge state, through the product's own chat on the offline planner."""
    import json

    from typer.testing import CliRunner

    from autooptimizer.cli.app import app

    out = CliRunner().invoke(app, ["chat", "Roll back the latest deployment, p95 regressed", "--env", "staging",
                                   "--no-input", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert "nothing to roll back to" in data["answer"] and "fatal" not in data["answer"]
    [call] = [c for c in data["tool_calls"] if c["tool"] == "rollback_deployment"]
    assert call["decision"] == "permit" and "staging has no deployment" in call["error"]
