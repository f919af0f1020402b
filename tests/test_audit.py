"""Audit trail: hash chain, tamper detection (edit, delete, reorder, truncate), concurrent writers, replay."""

from __future__ import annotations

import json
import multiprocessing
import threading
from pathlib import Path

from pydantic import BaseModel
from typer.testing import CliRunner

from autooptimizer.cli.app import app
from autooptimizer.policies.audit import GENESIS, AuditLog, record_hash
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
          facts=lambda a: {"ab_passed": a.model_version == "7"})
    def promote(args: PromoteArgs) -> dict:
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
