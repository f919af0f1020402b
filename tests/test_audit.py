"""Audit trail: hash chain, tamper detection (edit, delete, reorder, truncate), concurrent writers, replay."""

from __future__ import annotations

import json
import multiprocessing
import threading
from pathlib import Path

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from autooptimizer.cli.app import app
from autooptimizer.policies.audit import GENESIS, TAIL_CHECK, AuditError, AuditLog, canonical, record_hash
from autooptimizer.policies.pdp import reload_policies
from autooptimizer.tools.registry import ToolRegistry, tool


def _log_with(n: int, path: Path | None = None) -> AuditLog:
    log = AuditLog(path)
    for i in range(n):
        log.append({"kind": "decision", "agent": "ml", "tool": "train_reranker", "i": i, "args": {"steps": i}})
    return log


def _lines(log: AuditLog) -> list[str]:
    return log.path.read_text().splitlines(keepends=True)


def _write(log: AuditLog, lines: list[str]) -> None:
    log.path.write_text("".join(lines))


def test_chain_links_every_record(autoopt_home: Path) -> None:
    log = _log_with(4)
    assert log.path == autoopt_home / "audit" / "audit.jsonl"
    recs = list(log.records())
    assert [r["seq"] for r in recs] == [1, 2, 3, 4]
    assert recs[0]["prev_hash"] == GENESIS
    for prev, cur in zip(recs, recs[1:], strict=False):
        assert cur["prev_hash"] == prev["hash"]
    assert all(record_hash(r) == r["hash"] for r in recs)
    assert {"time", "ts", "kind", "args"} <= set(recs[0])
    assert log.verify().model_dump() == {"ok": True, "records": 4, "broken_seq": None, "broken_line": None,
                                         "problem": None}


def test_edit_is_detected_naming_the_record() -> None:
    log = _log_with(5)
    lines = _lines(log)
    rec = json.loads(lines[2])
    rec["args"] = {"steps": 999}  # quietly change what was run
    lines[2] = json.dumps(rec, sort_keys=True, separators=(",", ":")) + "\n"
    _write(log, lines)
    rep = log.verify()
    assert (rep.ok, rep.broken_seq, rep.broken_line) == (False, 3, 3) and "edited" in rep.problem


def test_edit_with_recomputed_hash_breaks_the_next_link() -> None:
    log = _log_with(5)
    lines = _lines(log)
    rec = json.loads(lines[1])
    rec["decision"] = "permit"
    rec["hash"] = record_hash(rec)
    lines[1] = json.dumps(rec) + "\n"
    _write(log, lines)
    rep = log.verify()
    assert (rep.ok, rep.broken_seq) == (False, 3) and "does not chain" in rep.problem


def test_deletion_is_detected() -> None:
    log = _log_with(5)
    lines = _lines(log)
    del lines[1]
    _write(log, lines)
    rep = log.verify()
    assert (rep.ok, rep.broken_line, rep.broken_seq) == (False, 2, 3) and "deleted" in rep.problem


def test_deleting_the_last_records_is_detected() -> None:
    log = _log_with(5)
    _write(log, _lines(log)[:3])
    rep = log.verify()
    assert not rep.ok and "deleted from the end" in rep.problem and rep.broken_seq == 4


def test_reordering_is_detected() -> None:
    log = _log_with(5)
    lines = _lines(log)
    lines[1], lines[2] = lines[2], lines[1]
    _write(log, lines)
    rep = log.verify()
    assert (rep.ok, rep.broken_line) == (False, 2) and rep.broken_seq == 3


def test_garbage_line_is_detected() -> None:
    log = _log_with(3)
    lines = _lines(log)
    lines[0] = "{oops\n"
    _write(log, lines)
    rep = log.verify()
    assert (rep.ok, rep.broken_line) == (False, 1) and "not a JSON record" in rep.problem


def test_cli_verify_exit_codes_and_names_the_broken_record() -> None:
    log = _log_with(4)
    runner = CliRunner()
    ok = runner.invoke(app, ["audit", "verify"])
    assert ok.exit_code == 0 and "4 records" in ok.output
    lines = _lines(log)
    lines[2] = lines[2].replace('"steps":2', '"steps":3')
    _write(log, lines)
    bad = runner.invoke(app, ["audit", "verify"])
    assert bad.exit_code == 1 and "record 3" in bad.output
    assert json.loads(runner.invoke(app, ["audit", "verify", "--json"]).stdout)["broken_seq"] == 3


def test_concurrent_threads_keep_one_chain() -> None:
    log = AuditLog()

    def writer(t: int) -> None:
        for i in range(25):
            AuditLog(log.path).append({"kind": "t", "thread": t, "i": i})

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    rep = log.verify()
    assert rep.ok and rep.records == 100


def _proc_writer(path: str, p: int) -> None:
    log = AuditLog(Path(path))
    for i in range(20):
        log.append({"kind": "p", "proc": p, "i": i})


def test_concurrent_processes_keep_one_chain() -> None:
    log = AuditLog()
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_proc_writer, args=(str(log.path), p)) for p in range(3)]
    for pr in procs:
        pr.start()
    for pr in procs:
        pr.join(60)
        assert pr.exitcode == 0
    rep = log.verify()
    assert rep.ok and rep.records == 60
    assert sorted((r["proc"], r["i"]) for r in log.records()) == [(p, i) for p in range(3) for i in range(20)]


class PromoteArgs(BaseModel):
    model_version: str


def test_replay_lists_decisions_that_todays_policies_would_change(policy_copy: Path) -> None:
    policies = policy_copy
    r = ToolRegistry()

    @tool(name="promote_model", owner="devops", risk="critical", registry=r,
          facts=lambda a, ctx: {"ab_passed": a.model_version == "7"})
    def promote(args: PromoteArgs, ctx: object) -> dict:
        """Promote."""
        return {"ok": True}

    r.call("devops", "promote_model", {"model_version": "7"}, env="prod", cycle_id="cyc-1")  # permit
    r.call("devops", "promote_model", {"model_version": "6"}, env="prod", cycle_id="cyc-1")  # deny (no A/B)
    r.call("devops", "promote_model", {"model_version": "x" * 70000}, env="prod", cycle_id="cyc-1")  # registry deny
    r.call("devops", "promote_model", {"model_version": "7"}, env="prod", cycle_id="cyc-2")
    log = AuditLog()
    assert log.replay("cyc-1").differences == []

    prod = policies / "cedar" / "prod.cedar"  # an operator tightens prod: promotions now need a human
    prod.write_text(prod.read_text().replace('@id("prod.promote")', '@id("prod.promote")\n@decision("needs_approval")'))
    reload_policies()
    rep = log.replay("cyc-1")
    assert rep.evaluated == 2
    assert [(d.tool, d.recorded, d.now, d.now_policies) for d in rep.differences] == [
        ("promote_model", "permit", "needs_approval", ["prod.promote"])]
    out = CliRunner().invoke(app, ["audit", "replay", "cyc-1"])
    assert out.exit_code == 0 and "1 would differ" in out.output and "was permit" in out.output
    reload_policies()


def test_replay_keeps_the_meaning_of_records_from_before_run_scopes() -> None:
    """A decision recorded before `in_scope` existed was an unscoped call: replayed, it must not flip to deny
    (a missing boolean reads as false). A record that has the key replays as recorded."""
    log = AuditLog()
    old = {"kind": "decision", "agent": "devops", "tool": "rollback_deployment", "env": "dev", "cycle_id": "c-old",
           "context": {"approved": False, "kill_switch": False}, "pdp": {"decision": "permit",
                                                                          "policies": ["shared.rollback"]}}
    log.append(old)
    log.append({**old, "context": {**old["context"], "in_scope": False},
                "pdp": {"decision": "deny", "policies": ["shared.intent-scope"]}})
    rep = log.replay("c-old")
    assert rep.evaluated == 2 and rep.differences == []
    log.append({**old, "cycle_id": "c-new", "context": {**old["context"], "in_scope": False}})
    (diff,) = log.replay("c-new").differences
    assert (diff.recorded, diff.now, diff.now_policies) == ("permit", "deny", ["shared.intent-scope"])


# --- tamper evidence covers the tail: appends refuse a chain whose end does not match the head ---------------------
def _rehash(line: str, **changes: object) -> str:
    rec = json.loads(line)
    rec.update(changes)
    rec["hash"] = record_hash(rec)
    return canonical(rec) + "\n"


def _forged(lines: list[str], at: int) -> str:
    """A record that looks like record `at` (1-based) but says something else, with a valid own hash."""
    return _rehash(lines[at - 1], args={"steps": 12345})


TAMPERS = {  # kind -> (rewrite of the 6 lines, the seq verify names, words in its problem)
    "truncation": (lambda ls: ls[:4], 5, "deleted from the end"),
    "deletion": (lambda ls: ls[:2] + ls[3:], 4, "deleted"),
    "insertion": (lambda ls: ls[:3] + [_forged(ls, 3)] + ls[3:], 3, "reordered, inserted"),
    "reordering": (lambda ls: ls[:2] + [ls[3], ls[2]] + ls[4:], 4, "reordered"),
    "edit": (lambda ls: ls[:3] + [ls[3].replace('"steps":3', '"steps":9')] + ls[4:], 4, "edited"),
    "edit-with-rehash": (lambda ls: ls[:3] + [_rehash(ls[3], decision="permit")] + ls[4:], 5, "does not chain"),
    "edit-of-the-last-record": (lambda ls: ls[:5] + [_rehash(ls[5], decision="permit")], 6, "head was altered"),
}


@pytest.mark.parametrize("later_append", [False, True], ids=["no-later-append", "attempted-later-append"])
@pytest.mark.parametrize("kind", list(TAMPERS))
def test_every_tamper_kind_is_reported_before_and_after_a_later_append(kind: str, later_append: bool) -> None:
    log = _log_with(6)
    rewrite, broken_seq, words = TAMPERS[kind]
    _write(log, rewrite(_lines(log)))
    before = log.verify()
    assert not before.ok and before.broken_seq == broken_seq and words in before.problem
    if later_append:
        tampered = log.path.read_bytes()
        with pytest.raises(AuditError) as err:
            AuditLog().append({"kind": "kill_switch", "actor": "someone", "on": False})
        assert "cannot be extended" in err.value.problem and "autoopt audit verify" in err.value.fix
        assert log.path.read_bytes() == tampered  # nothing written: the evidence stays as it was
    assert log.verify() == before


def test_cutting_the_tail_then_writing_once_no_longer_hides_the_cut() -> None:
    """The reported failure: cut the last two records, make one ordinary write, and verify said OK."""
    log = _log_with(5)
    _write(log, _lines(log)[:3])
    runner = CliRunner()
    assert runner.invoke(app, ["audit", "verify"]).exit_code == 1
    from autooptimizer.policies.killswitch import kill_switch

    with pytest.raises(AuditError):  # ON still happens (the safety action never waits for the log), then fails loud
        kill_switch.set(True, by="ops", reason="incident")
    assert kill_switch.is_on()
    with pytest.raises(AuditError):
        kill_switch.set(False, by="someone")  # an unrecorded OFF cannot happen: the switch stays on
    assert kill_switch.is_on()
    bad = runner.invoke(app, ["audit", "verify"])
    assert bad.exit_code == 1 and "ends at record 3" in bad.output and "says record 5" in bad.output
    assert [r["seq"] for r in log.records()] == [1, 2, 3]


def test_a_broken_tail_makes_tool_calls_fail_closed(policy_copy: Path) -> None:
    r = ToolRegistry()
    ran: list[str] = []

    @tool(name="promote_model", owner="devops", risk="critical", registry=r, facts=lambda a, ctx: {"ab_passed": True})
    def promote(args: PromoteArgs, ctx: object) -> dict:
        """Promote."""
        ran.append(args.model_version)
        return {"ok": True}

    assert r.call("devops", "promote_model", {"model_version": "7"}, env="dev").executed  # healthy log: it runs
    log = AuditLog()
    _write(log, _lines(log)[:1])  # the result record is cut off
    for env in ("dev", "staging"):  # a permit, and a call that would open an approval request
        res = r.call("devops", "promote_model", {"model_version": "7"}, env=env)
        assert (res.decision, res.executed, res.policies) == ("deny", False, ["registry.audit-unavailable"])
        assert "cannot be extended" in res.error and "Nothing ran" in res.error
    assert ran == ["7"] and [rec["seq"] for rec in log.records()] == [1]
    from autooptimizer.policies.approvals import ApprovalStore

    assert ApprovalStore().list() == []  # the approval request was not made without its record


def test_an_approval_answer_is_not_stored_when_the_log_refuses_it() -> None:
    from autooptimizer.policies.approvals import ApprovalStore

    store = ApprovalStore()
    req = store.request(tool="promote_model", agent="devops", env="staging", args={"model_version": "7"},
                        reason="needs a human", policies=["staging.promote-approval"])
    log = AuditLog()
    _write(log, [])  # every record cut; the head still names record 1
    with pytest.raises(AuditError):
        store.approve(req.id, by="someone")
    assert store.get(req.id).status == "pending"
    out = CliRunner().invoke(app, ["policy", "check", "--env", "dev", "--agent", "metrics", "--tool",
                                   "query_metrics", "--audit"])
    assert out.exit_code != 0 and isinstance(out.exception, AuditError)
    assert log.path.read_text() == ""


# --- crash cases that must not brick the log --------------------------------------------------------------------
def test_a_crash_between_line_write_and_head_update_is_repaired(monkeypatch: pytest.MonkeyPatch,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    import autooptimizer.policies.audit as audit_mod

    log = _log_with(3)
    real_replace = audit_mod.os.replace

    def crash(src: object, dst: object) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(audit_mod.os, "replace", crash)
    with pytest.raises(OSError):
        log.append({"kind": "t", "i": 3})
    monkeypatch.setattr(audit_mod.os, "replace", real_replace)
    assert json.loads(log.head_path.read_text())["seq"] == 3 and len(_lines(log)) == 4  # one record ahead
    assert log.verify().model_dump(include={"ok", "records"}) == {"ok": True, "records": 4}
    assert log.append({"kind": "t", "i": 4})["seq"] == 5 and "one record behind" in caplog.text
    assert json.loads(log.head_path.read_text())["seq"] == 5 and log.verify().ok


def test_two_records_ahead_of_the_head_is_not_a_crash_and_is_refused() -> None:
    log = _log_with(3)
    old_head = log.head_path.read_text()
    log.append({"kind": "t"})
    log.append({"kind": "t"})
    log.head_path.write_text(old_head)
    assert not log.verify().ok
    with pytest.raises(AuditError, match="names record 3"):
        log.append({"kind": "t"})


@pytest.mark.parametrize("torn", [b'{"seq":4,"time":"2026-', b"\x00\x00\x00", b'{"seq": 4, "kind": "t", "ha'])
def test_a_torn_last_line_is_reported_then_truncated_by_the_next_append(torn: bytes,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    log = _log_with(3)
    intact = log.path.read_bytes()
    with log.path.open("ab") as f:
        f.write(torn)
    rep = log.verify()
    assert (rep.ok, rep.broken_line, rep.records) == (False, 4, 3) and "torn write" in rep.problem
    rec = log.append({"kind": "after"})
    assert rec["seq"] == 4 and rec["prev_hash"] == json.loads(intact.splitlines()[-1])["hash"]
    assert "torn write" in caplog.text and log.path.read_bytes().startswith(intact)
    assert log.verify().model_dump(include={"ok", "records"}) == {"ok": True, "records": 4}


def test_torn_bytes_that_do_not_follow_the_head_are_refused() -> None:
    log = _log_with(4)
    _write(log, _lines(log)[:2] + ['{"seq":3,"ti'])  # truncated AND torn: not what a crash leaves
    with pytest.raises(AuditError, match="not a torn write"):
        log.append({"kind": "t"})
    log2 = AuditLog(log.path.with_name("other.jsonl"))
    for i in range(2):
        log2.append({"kind": "t", "i": i})
    log2.path.write_text(log2.path.read_text().rstrip("\n"))  # a whole record without its newline: cut or edited
    assert "ends without a newline" in log2.verify().problem
    with pytest.raises(AuditError):
        log2.append({"kind": "t"})


def test_a_missing_or_unreadable_head_with_records_is_refused() -> None:
    log = _log_with(2)
    log.head_path.unlink()
    assert not log.verify().ok
    with pytest.raises(AuditError, match="missing"):
        log.append({"kind": "t"})
    log.head_path.write_text("{not json")
    assert "missing or unreadable" in log.verify().problem
    with pytest.raises(AuditError, match="unreadable"):
        log.append({"kind": "t"})
    assert len(_lines(log)) == 2


def test_a_new_log_writes_its_head_before_the_first_record() -> None:
    log = AuditLog()
    assert log.verify().ok and not log.head_path.exists()
    log.append({"kind": "first"})
    assert json.loads(log.head_path.read_text())["seq"] == 1 and log.verify().ok
    fresh = AuditLog(log.path.with_name("fresh.jsonl"))
    fresh._checked_tail()  # what append does first, under its lock
    assert json.loads(fresh.head_path.read_text()) == {"seq": 0, "hash": GENESIS} and fresh.verify().ok


def test_tampering_older_than_the_tail_window_is_still_reported_after_appends() -> None:
    """Appends re-check only the last TAIL_CHECK records (O(1) per write); an edit further back does not block
    them, and cannot be hidden by them either: verify keeps naming it."""
    log = _log_with(TAIL_CHECK + 5)
    lines = _lines(log)
    lines[1] = lines[1].replace('"steps":1', '"steps":7')
    _write(log, lines)
    before = log.verify()
    assert (before.ok, before.broken_seq) == (False, 2)
    log.append({"kind": "later"})
    assert log.verify() == before


def test_records_that_are_not_json_as_they_are_are_stored_sanitized() -> None:
    deep: object = "leaf"
    for _ in range(1500):
        deep = [deep]
    log = AuditLog()
    rec = log.append({"kind": "t", "deep": deep, "big": 10 ** 5000, "text": "a\ud800b"})
    assert "sanitized" in rec and rec["text"] == "a\\ud800b" and "digits" in rec["big"]
    assert log.verify().ok


def test_verify_survives_a_line_nested_too_deep_to_parse() -> None:
    log = _log_with(2)
    with log.path.open("a") as f:
        f.write("[" * 100_000 + "]" * 100_000 + "\n")
    rep = log.verify()
    assert (rep.ok, rep.broken_line) == (False, 3) and "not a JSON record" in rep.problem
