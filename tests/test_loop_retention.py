"""Retention (loop/retention.py) through the gated prune_storage tool: every protected object survives a prune, old
unprotected items are deleted, the PDP refuses a plan that touches a protected object or could not read the
protected sets, and the feedback log keeps its newest records."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import yaml
from support.protected_world import deploy_protected_history
from support.tiny_stack import start_tiny_service
from support.weights import weights_folder

from autooptimizer.policies.pdp import get_pdp
from autooptimizer.search import aliases, model_store
from autooptimizer.search.model_store import ModelSpec
from autooptimizer.settings import get_settings
from autooptimizer.testing import make_versions
from autooptimizer.tools import load_all_tools

ENVS = ("dev", "staging", "prod")
# version -> what protects it (tools/protection.py's roles, plus what retention adds)
PROTECTED = {"v-gold": "gold", "v-champ": "champion", "v-dev": "serving", "v-prod": "serving",
             "v-canary": "canary", "v-safe": "safe_point", "v-window": "rollback_window", "v-mid": "rollback_window",
             "v-chall": "challenger alias", "v-dep": "fallback of the champion"}
OLD = ["v-old", "v-free1", "v-free2", "v-free3"]  # unprotected (v-old has left the rollback window)


def _profiles(tmp_path: Path, **retention: object) -> None:
    """A copy of the packaged profiles with small retention counts, active through AUTOOPT_PROFILES_DIR."""
    from autooptimizer.profiles import profile_path

    folder = tmp_path / "profiles"
    folder.mkdir(exist_ok=True)
    for env in ENVS:
        doc = yaml.safe_load(profile_path(env).read_text())
        doc["retention"] = {**doc["retention"], **retention}
        (folder / f"{env}.yaml").write_text(yaml.safe_dump(doc))
    os.environ["AUTOOPT_PROFILES_DIR"] = str(folder)


@pytest.fixture()
def world(autoopt_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.setenv("AUTOOPT_PROFILES_DIR", "")
    _profiles(tmp_path, modelVersions=1, datasets=1, cycleArtifacts=1, traces=1, mlflowRuns=1)
    make_versions([*OLD, *(v for v in PROTECTED if v not in ("v-champ", "v-dep"))])
    fallback = ModelSpec(version="v-dep", kind="bm25", fusion_weight=0.0, params={"n": 99})
    model_store.save(fallback)
    model_store.save(ModelSpec(version="v-champ", kind="ltr_fusion", params={"experts": [],
                                                                               "fallback": fallback.content()}))
    time.sleep(1.1)  # created_at has 1 s resolution: the newest unprotected version is v-new
    make_versions(["v-new"])
    aliases.set_alias(aliases.GOLD, "v-gold")
    aliases.set_alias(aliases.CHAMPION, "v-champ")
    aliases.set_alias(aliases.CHALLENGER, "v-chall")
    settings = get_settings()
    _, running = deploy_protected_history(staging_version="v-gold")
    for i, name in enumerate(["si_old_1", "si_old_2", running.id]):
        (settings.home / "artifacts" / name).mkdir(parents=True, exist_ok=True)
        os.utime(settings.home / "artifacts" / name, (1000 + i, 1000 + i))
    for i in range(3):
        (settings.home / "datasets" / f"d{i}").mkdir(parents=True)
        (settings.home / "datasets" / f"d{i}" / "pairs.jsonl").write_text("x\n")
        os.utime(settings.home / "datasets" / f"d{i}", (1000 + i, 1000 + i))
        (settings.home / "traces").mkdir(exist_ok=True)
        (settings.home / "traces" / f"t{i}.jsonl").write_text("{}\n")
        os.utime(settings.home / "traces" / f"t{i}.jsonl", (1000 + i, 1000 + i))
    return {"cycle": running.id}


@pytest.mark.parametrize("env", ENVS)
def test_prune_deletes_old_unprotected_items_and_keeps_every_protected_one(world: dict, env: str) -> None:
    res = load_all_tools().call("devops", "prune_storage", {}, env=env)
    assert (res.decision, res.executed, res.error) == ("permit", True, None), res
    deleted = {(d["kind"], d["name"]) for d in res.result["deleted"]}
    assert {n for k, n in deleted if k == "model_version"} == set(OLD), "all but the newest unprotected version"
    assert model_store.exists("v-new") and not any(model_store.exists(v) for v in OLD)
    assert {n for k, n in deleted if k == "dataset"} == {"d0", "d1"}
    assert {n for k, n in deleted if k == "trace"} == {"t0.jsonl", "t1.jsonl"}
    assert {n for k, n in deleted if k == "cycle_artifacts"} == {"si_old_1"}, "the running cycle is not counted"
    assert (get_settings().home / "artifacts" / world["cycle"]).is_dir()
    assert res.result["skipped"] == []


@pytest.mark.parametrize("version", sorted(PROTECTED))
def test_a_protected_version_survives_every_prune(world: dict, version: str) -> None:
    res = load_all_tools().call("devops", "prune_storage", {}, env="prod")  # the unattended one
    assert res.decision == "permit" and model_store.exists(version), PROTECTED[version]
    assert version in res.result["protected"]["model_version"]
    assert not any(model_store.exists(v) for v in OLD), "the same prune did delete the unprotected ones"


def test_a_pruned_version_sharing_weights_frees_only_its_own_bytes_and_its_registry_entry(
        world: dict, tmp_path: Path) -> None:
    """Identical weights are one hard-linked file (model_store.save): pruning one version leaves the other's file
    whole, drops only the pruned version's MLflow entry (sources are the model folders), and reports as freed exactly
    what the home's disk use fell by."""
    from autooptimizer.ml import model_registry as registry
    from autooptimizer.soak.measure import disk_bytes

    shared = b"r" * 8000
    model_store.save(ModelSpec(version="v-free-w", kind="bm25", params={"n": 101}, created_at="2000-01-01T00:00:00"),
                     weights_dir=weights_folder(tmp_path / "o", {"reference.npz": shared,
                                                                "experts/x.npz": b"a" * 3000}))
    model_store.save(ModelSpec(version="v-chall-w", kind="bm25", params={"n": 102}),
                     weights_dir=weights_folder(tmp_path / "k", {"reference.npz": shared,
                                                                "experts/x.npz": b"b" * 2000}))
    aliases.set_alias(aliases.CHALLENGER, "v-chall-w")
    for v in ("v-free-w", "v-chall-w"):
        registry.register_model(v)
    home = get_settings().home
    folders = [home / f for f in ("models", "datasets", "traces", "artifacts", "mlflow/artifacts")]
    before = sum(disk_bytes(f) for f in folders)
    res = load_all_tools().call("devops", "prune_storage", {}, env="prod")
    assert res.decision == "permit" and not model_store.exists("v-free-w"), res
    kept = model_store.version_dir("v-chall-w")
    assert (kept / "weights" / "reference.npz").read_bytes() == shared
    assert res.result["bytes_freed"] == before - sum(disk_bytes(f) for f in folders), "a shared file frees nothing"
    c = registry.client()
    sources = {mv.tags["autoopt_version"]: mv.source for mv in
               c.search_model_versions(f"name='{registry.REGISTERED_MODEL}'")}
    assert "v-free-w" not in sources and sources["v-chall-w"] == kept.resolve().as_uri()


def test_the_pdp_refuses_a_plan_that_touches_a_protected_object_or_is_unchecked() -> None:
    for env in ENVS:
        pdp = get_pdp(env)
        ok = pdp.decide("devops", "prune_storage", {"in_scope": True, "target_checked": True})
        assert ok.decision == "permit"
        bad = pdp.decide("devops", "prune_storage", {"in_scope": True, "target_checked": True, "approved": True,
                                                     "prune_touches_protected": True})
        assert bad.decision == "deny" and "shared.prune-protected" in bad.policies
        unchecked = pdp.decide("devops", "prune_storage", {"in_scope": True})
        assert unchecked.decision == "deny" and "shared.prune-protection-unchecked" in unchecked.policies
        other = pdp.decide("ml", "prune_storage", {"in_scope": True, "target_checked": True})
        assert other.decision == "deny", "only its owner"


def test_unreadable_protection_denies_and_deletes_nothing(world: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    from autooptimizer.loop.gitops import GitError
    from autooptimizer.tools import protection

    def broken(*_a: object, **_k: object) -> None:
        raise GitError("git is unreachable", "retry")

    monkeypatch.setattr(protection, "desired_states", broken)
    res = load_all_tools().call("devops", "prune_storage", {}, env="prod")
    assert (res.decision, res.executed) == ("deny", False) and res.policies == ["registry.facts-error"]
    assert all(model_store.exists(v) for v in OLD)


def test_the_feedback_log_keeps_its_newest_whole_records(tmp_path: Path) -> None:
    from autooptimizer.loop.retention import trim_log

    log = tmp_path / "feedback.jsonl"
    lines = [json.dumps({"i": i, "pad": "x" * 50}) + "\n" for i in range(100)]
    log.write_text("".join(lines))
    cut = trim_log(log, 1000)
    kept = [json.loads(x)["i"] for x in log.read_text().splitlines()]
    assert kept == list(range(100 - len(kept), 100)) and 0 < len(kept) <= 1000 // len(lines[0]) + 1
    assert log.stat().st_size <= 1000 and cut == len("".join(lines)) - log.stat().st_size


def test_a_cycle_prunes_at_its_end_when_the_profile_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from autooptimizer.loop.cycle import CycleOptions, CycleRunner

    monkeypatch.setenv("AUTOOPT_PROFILES_DIR", "")
    _profiles(tmp_path, cycleArtifacts=2, afterEachCycle=True)
    svc = start_tiny_service(tmp_path, monkeypatch, ["v-a"])
    try:
        runner = CycleRunner()
        assert runner.profile.retention.after_each_cycle
        recs = [runner.run(CycleOptions(trigger="test")) for _ in range(4)]
    finally:
        svc.stop()
    assert all(r.outcome == "no_action" for r in recs), "retention never changes the outcome"
    last = recs[-1].summary["retention"]
    assert last["decision"] == "permit" and last["error"] is None
    left = sorted(p.name for p in (get_settings().home / "artifacts").iterdir())
    assert len(left) <= 3 and recs[-1].id in left, "the newest folders (and the running cycle's own) stay"


def _timed_log(path: Path, ages_days: list[float], now: float, pad: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        for i, age in enumerate(ages_days):
            fh.write(json.dumps({"ts": now - age * 86400, "request_id": f"r{i}", "age": age, "pad": "x" * pad}) + "\n")


def _ages(path: Path) -> list[float]:
    return [json.loads(x)["age"] for x in path.read_text().splitlines()]


def test_the_feedback_log_cut_by_age_and_by_size_known_answers(tmp_path: Path) -> None:
    from autooptimizer.loop.retention import feedback_cut, first_record_since, trim_log
    from autooptimizer.profiles import Retention

    now = 2_000_000_000.0
    log = tmp_path / "feedback.jsonl"
    ages = [20, 15, 10, 8, 7.01, 6.99, 3, 1, 0.1]
    _timed_log(log, ages, now)
    week = Retention(feedbackLogDays=7)
    size = log.stat().st_size
    cut, why = feedback_cut(log, week, now) or (0, "")
    assert "older than 7 days" in why
    trim_log(log, size - cut)
    assert _ages(log) == [6.99, 3, 1, 0.1], "exactly the records of the last 7 days, the first one whole"
    assert feedback_cut(log, week, now) is None, "nothing left to cut"
    # the larger cut wins: 1 KB holds fewer records than 7 days here
    _timed_log(log, ages, now, pad=300)
    size = log.stat().st_size
    cut, why = feedback_cut(log, Retention(feedbackLogDays=7, feedbackLogMB=1 / 1024), now) or (0, "")
    assert size - cut == 1024 and "newest 0.000976562 MB" in why
    trim_log(log, size - cut)
    assert _ages(log) == [1, 0.1]
    # no age limit: only the size cap; everything older than the limit: everything goes
    _timed_log(log, ages, now)
    assert feedback_cut(log, Retention(feedbackLogDays=None), now) is None
    assert first_record_since(log, now + 1) == log.stat().st_size
    trim_log(log, log.stat().st_size - first_record_since(log, now + 1))
    assert log.read_text() == ""
    assert feedback_cut(tmp_path / "missing.jsonl", week, now) is None


def test_a_record_without_a_time_stops_the_age_cut(tmp_path: Path) -> None:
    """A line whose time cannot be read counts as new: the cut never passes it (nothing after it is deleted on a
    guess), and a torn last line (the service appending) is kept."""
    from autooptimizer.loop.retention import feedback_cut, trim_log
    from autooptimizer.profiles import Retention

    now = 2_000_000_000.0
    log = tmp_path / "feedback.jsonl"
    _timed_log(log, [30, 29, 28, 27, 26, 25], now)
    with log.open("a") as fh:
        fh.write('{"request_id": "untimed", "age": -1}\n')
    with log.open("a") as fh:
        fh.write(json.dumps({"ts": now - 20 * 86400, "age": 20}) + "\n" + '{"ts": 1')
    cut = feedback_cut(log, Retention(feedbackLogDays=7), now)
    assert cut is not None
    trim_log(log, log.stat().st_size - cut[0])
    lines = log.read_text().split("\n")
    assert [json.loads(x)["age"] for x in lines[:-1]] == [-1, 20], "the old records before it were cut"
    assert lines[-1] == '{"ts": 1'


def test_trim_at_a_line_start_keeps_that_whole_record(tmp_path: Path) -> None:
    from autooptimizer.loop.retention import trim_log

    log = tmp_path / "feedback.jsonl"
    lines = [json.dumps({"i": i}) + "\n" for i in range(10)]
    log.write_text("".join(lines))
    trim_log(log, len("".join(lines[-3:])))
    assert log.read_text() == "".join(lines[-3:]), "the last 3 records, none dropped as if partial"
    trim_log(log, 3)  # less than one record: a partial line is never kept
    assert log.read_text() == ""


def test_prune_storage_cuts_the_feedback_log_by_age(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The gated tool applies the profile's feedbackLogDays (the path every cycle's retention takes)."""
    monkeypatch.setenv("AUTOOPT_PROFILES_DIR", "")
    _profiles(tmp_path, feedbackLogDays=2)
    get_settings.cache_clear()
    log = get_settings().feedback_log
    _timed_log(log, [9, 5, 2.5, 1.5, 0.5], time.time())
    res = load_all_tools().call("devops", "prune_storage", {}, env="prod")
    assert (res.decision, res.executed, res.error) == ("permit", True, None), res
    assert [d["reason"] for d in res.result["deleted"] if d["kind"] == "feedback_log"] == [
        "records older than 2 days"]
    assert _ages(log) == [1.5, 0.5]


def test_two_prunes_at_once_cut_the_feedback_log_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The end-of-cycle prune and an operator's `autoopt prune` planned before either deleted: the second must not
    cut the same number of bytes again from the already trimmed log (a byte count planned on the old file cut two
    records of the last 2 days; a trim to the newest N bytes, as before feedbackLogDays, was idempotent)."""
    from autooptimizer.loop.retention import _DELETE, plan
    from autooptimizer.profiles import load_profile

    monkeypatch.setenv("AUTOOPT_PROFILES_DIR", "")
    _profiles(tmp_path, feedbackLogDays=2)
    get_settings.cache_clear()
    settings, now = get_settings(), time.time()
    log = settings.feedback_log
    _timed_log(log, [9, 5, 2.5, 1.5, 0.5], now)
    plans = [plan(settings, load_profile("prod"), now) for _ in range(2)]
    for p in plans:
        assert [i.kind for i in p.delete] == ["feedback_log"]
        _DELETE["feedback_log"](settings, "feedback.jsonl", p)
    assert _ages(log) == [1.5, 0.5]
