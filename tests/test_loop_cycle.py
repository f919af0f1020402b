"""Cycles against the real search service (tiny corpus, cheap bm25 versions), real git, real PDP and audit log."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.tiny_stack import start_tiny_service

from autooptimizer.loop.cycle import CycleOptions, CycleRunner
from autooptimizer.loop.gitops import HelmPatch
from autooptimizer.loop.release import Release
from autooptimizer.search import aliases
from autooptimizer.settings import get_settings
from autooptimizer.testing import SyntheticSource, TinyService


@pytest.fixture()
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TinyService]:
    svc = start_tiny_service(tmp_path, monkeypatch, ["v-a", "v-b", "v-bad"])
    yield svc
    svc.stop()


def _audit_cycle_ids(home: Path) -> set[str]:
    ids = set()
    for path in home.rglob("*.jsonl"):
        if "audit" in path.name:
            for line in path.read_text().splitlines():
                rec = json.loads(line)
                cid = rec.get("cycle_id") or (rec.get("call") or {}).get("cycle_id")
                if cid:
                    ids.add(cid)
    return ids


def test_latency_cycle_scales_through_gitops(service: TinyService, autoopt_home: Path) -> None:
    rec = CycleRunner().run(CycleOptions(gate="p95_latency"))
    assert rec.status == "finished" and rec.outcome == "scaled", rec.summary
    assert rec.id.startswith("si_") and len(rec.id) == len("si_2026_01_01_001")
    rel = Release()
    assert rel.git.read_patch() == HelmPatch(model_version="v-a", replicas=2)
    assert service.service.replicas == 2
    ok, _, _ = rel.consistent()
    assert ok
    art = Path(rec.artifacts_dir)
    assert json.loads((art / "summary.json").read_text())["outcome"] == "scaled"
    assert "replicas: 2" in (art / "helm_patch.yaml").read_text()
    assert [s.name for s in rec.steps] == ["monitor", "supervisor", "scale"]
    assert all(s.status == "done" for s in rec.steps)
    decisions = rec.summary["decisions"]
    assert [(d["tool"], d["decision"]) for d in decisions] == [("check_quality_gates", "permit"),
                                                               ("scale_service", "permit")]
    assert rec.id in _audit_cycle_ids(autoopt_home)
    assert rec.trace_id


def test_cost_cycle_switches_to_a_cheaper_variant(service: TinyService) -> None:
    rec = CycleRunner().run(CycleOptions(gate="cost_budget"))
    assert rec.outcome == "variant_switched"
    assert service.service.rerank_depth == 25
    assert Release().git.read_patch().rerank_depth == 25


def test_no_gate_firing_is_no_action(service: TinyService) -> None:
    rec = CycleRunner().run(CycleOptions())
    assert rec.outcome == "no_action" and rec.summary["gates"]  # gates read (all unknown without Prometheus)
    assert set(rec.summary["gates"].values()) == {"unknown"}


def _runner(means: dict[str, float], **kw: object) -> CycleRunner:
    return CycleRunner(source=SyntheticSource(means, **kw))


def test_challenger_passing_ab_is_promoted_and_watched(service: TinyService) -> None:
    runner = _runner({"v-a": 0.4, "v-b": 0.7})
    rec = runner.run(CycleOptions(gate="ndcg_drop", challenger="v-b", watch_seconds=1))
    assert rec.outcome == "promoted", rec.summary.get("reason")
    assert service.service.routing.stable.version == "v-b" and service.service.routing.canary is None
    assert Release().git.read_patch() == HelmPatch(model_version="v-b")
    art = Path(rec.artifacts_dir)
    ab = json.loads((art / "ab_test_results.json").read_text())
    assert ab["verdict"] == "pass" and ab["treatment"]["model_version"] == "v-b"
    assert [s.name for s in rec.steps] == ["monitor", "supervisor", "challenger", "canary", "ab_test", "promote",
                                           "watch", "champion_alias"]
    assert aliases.get_alias(aliases.CHAMPION) == "v-b", "the registry's champion follows what serves"
    assert rec.summary["champion_alias"]["mlflow_version"]
    log = Release().git.log()
    assert [c.subject.split()[0] for c in log[:2]] == ["Promote", "Canary"]


def test_failed_ab_removes_the_canary(service: TinyService) -> None:
    runner = _runner({"v-a": 0.7, "v-b": 0.3})
    rec = runner.run(CycleOptions(gate="ndcg_drop", challenger="v-b"))
    assert rec.outcome == "ab_failed"
    assert service.service.routing.stable.version == "v-a" and service.service.routing.canary is None
    assert Release().git.read_patch() == HelmPatch(model_version="v-a")
    assert Release().consistent()[0]
    assert Release().git.log()[0].reverts is not None


def test_degradation_after_promotion_rolls_back_and_alerts(service: TinyService, autoopt_home: Path) -> None:
    # the A/B sees v-b win; after promotion the watch sees it far below v-a's pre-deploy samples
    class Flip(SyntheticSource):
        promoted = False

        def samples(self, model_version: str, since: float, until: float | None = None) -> list[float]:
            if model_version == "v-b" and Path(get_settings().home / "artifacts").exists() and self.promoted:
                return super().samples("bad", since)
            return super().samples(model_version, since)

    src = Flip({"v-a": 0.5, "v-b": 0.8, "bad": 0.1})
    runner = CycleRunner(source=src)
    orig_step = runner.step

    def step(cid, name, fn, inputs=None):  # flip the traffic once promotion is done
        out = orig_step(cid, name, fn, inputs)
        if name == "promote":
            src.promoted = True
        return out

    runner.step = step  # type: ignore[method-assign]
    rec = runner.run(CycleOptions(gate="ndcg_drop", challenger="v-b", watch_seconds=5))
    assert rec.outcome == "rolled_back", rec.summary.get("reason")
    assert service.service.routing.stable.version == "v-a"
    assert Release().git.read_patch() == HelmPatch(model_version="v-a")
    assert rec.summary["rollback"]["detect_to_restored_seconds"] < 60
    alerts = (autoopt_home / "loop" / "alerts.jsonl").read_text()
    assert "AutoOptRolledBack" in alerts


def test_kill_switch_stops_a_cycle_before_any_change(service: TinyService) -> None:
    from autooptimizer.policies.killswitch import kill_switch

    kill_switch.set(True, by="test", reason="stop")
    rec = CycleRunner().run(CycleOptions(gate="p95_latency"))
    assert rec.outcome == "denied"
    assert service.service.replicas == 1


def test_staging_promotion_waits_for_a_human(service: TinyService, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOOPT_ENV", "staging")
    get_settings.cache_clear()
    from autooptimizer.loop.cycle import CycleRunner as Runner
    from autooptimizer.profiles import load_profile

    prof = load_profile("staging").model_copy(update={"loop": load_profile("staging").loop.model_copy(
        update={"mock_signals": True})})
    rec = Runner(profile=prof, source=SyntheticSource({"v-a": 0.4, "v-b": 0.8})).run(
        CycleOptions(gate="ndcg_drop", challenger="v-b"))
    assert rec.outcome == "awaiting_approval", rec.summary.get("reason")
    from autooptimizer.policies.approvals import ApprovalStore

    pending = [r for r in ApprovalStore().list() if r.tool == "promote_model"]
    assert pending and pending[0].args == {"model_version": "v-b"}
    # nothing half-done: the canary was removed and the champion still serves
    assert service.service.routing.stable.version == "v-a" and service.service.routing.canary is None
    # a human approves; the next cycle makes exactly that promotion, once
    ApprovalStore().approve(pending[0].id, by="alice")
    rec2 = Runner(profile=prof, source=SyntheticSource({"v-a": 0.4, "v-b": 0.8})).run(
        CycleOptions(watch_seconds=1))
    assert rec2.outcome == "promoted", rec2.summary.get("reason")
    assert rec2.summary["approved_by"] == "alice"
    assert service.service.routing.stable.version == "v-b"
    assert ApprovalStore().get(pending[0].id).status == "used"


def test_concurrent_triggers_start_one_cycle(service: TinyService) -> None:
    runner = CycleRunner(source=SyntheticSource({"v-a": 0.4, "v-b": 0.7}))
    other = CycleRunner()  # a second runner (e.g. the scheduler) on the same AUTOOPT_HOME
    barrier = threading.Barrier(4)
    results: list[str | None] = []

    def go(r: CycleRunner) -> None:
        barrier.wait()
        results.append(r.trigger(CycleOptions(gate="p95_latency")))

    threads = [threading.Thread(target=go, args=(r,)) for r in (runner, runner, other, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    runner.wait(30)
    other.wait(30)
    started = [r for r in results if r]
    assert len(started) == 1, results
    assert len(runner.journal.list()) == 1
    assert service.service.replicas == 2
