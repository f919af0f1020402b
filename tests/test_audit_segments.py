"""Audit log segments (policies/audit.py): rotation by size or records, one chain across segments, the marker that
names the segment before, and tampering at a segment boundary reported by `verify` and `autoopt audit verify`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from autooptimizer.cli.app import app
from autooptimizer.policies.audit import GENESIS, SEGMENT_START, AuditError, AuditLog, record_hash
from autooptimizer.settings import get_settings


def _log(n: int, max_records: int = 3, max_bytes: int = 0) -> AuditLog:
    log = AuditLog(max_records=max_records, max_bytes=max_bytes)
    for i in range(n):
        log.append({"kind": "decision", "agent": "ml", "tool": "train_reranker", "i": i})
    return log


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def test_rotation_keeps_one_chain_and_each_segment_names_the_one_before() -> None:
    log = _log(10)
    segs = log.segments()
    assert [i for i, _ in segs] == [1, 2, 3, 4] and all(p.name == f"audit.{i:06d}.jsonl" for i, p in segs)
    recs = list(log.records())
    assert [r["seq"] for r in recs] == list(range(1, 15)), "10 records and 4 markers, seq unbroken"
    assert [r["i"] for r in recs if r["kind"] == "decision"] == list(range(10))
    assert recs[0]["prev_hash"] == GENESIS
    pairs = zip(recs, recs[1:], strict=False)
    assert all(b["prev_hash"] == a["hash"] and record_hash(b) == b["hash"] for a, b in pairs)
    for index, path in [*segs[1:], (5, log.path)]:
        first = json.loads(_lines(path)[0])
        before = json.loads(_lines(log.segment_path(index - 1))[-1])
        assert first["kind"] == SEGMENT_START and first["segment"] == index
        assert first["previous"] == {"file": f"audit.{index - 1:06d}.jsonl", "segment": index - 1,
                                     "last_seq": before["seq"], "head_hash": before["hash"]}
    assert all(len(_lines(p)) == 3 for _, p in segs), "a segment holds max_records lines, its marker included"
    rep = log.verify()
    assert rep.ok and rep.records == 14
    head = json.loads(log.head_path.read_text())
    assert head == {"seq": 14, "hash": recs[-1]["hash"]}


def test_rotation_by_size() -> None:
    log = _log(6, max_records=0, max_bytes=600)
    assert len(log.segments()) >= 2 and all(p.stat().st_size >= 600 for _, p in log.segments())
    assert log.verify().ok


def _swap(a: Path, b: Path) -> None:
    tmp = a.with_suffix(".swap")
    os.rename(a, tmp)
    os.rename(b, a)
    os.rename(tmp, b)


def _edit_first_of(log: AuditLog) -> None:
    path = log.segments()[2][1]
    lines = _lines(path)
    rec = json.loads(lines[0])
    rec["previous"]["segment"] = 7
    lines[0] = json.dumps(rec, separators=(",", ":"), sort_keys=True) + "\n"
    path.write_text("".join(lines))


def _edit_last_of(log: AuditLog, rehash: bool) -> None:
    path = log.segments()[1][1]
    lines = _lines(path)
    rec = json.loads(lines[-1])
    rec["tool"] = "delete_model"
    if rehash:
        rec["hash"] = record_hash(rec)
    lines[-1] = json.dumps(rec, separators=(",", ":"), sort_keys=True) + "\n"
    path.write_text("".join(lines))


def _cut_last_line(path: Path) -> None:
    path.write_text("".join(_lines(path)[:-1]))


TAMPER = {
    "delete the first segment": (lambda log: log.segments()[0][1].unlink(),
                                 "segment 1 (audit.000001.jsonl) is missing"),
    "delete a middle segment": (lambda log: log.segments()[1][1].unlink(),
                                "segment 2 (audit.000002.jsonl) is missing"),
    "delete the last segment": (lambda log: log.segments()[-1][1].unlink(),
                                "should begin with the marker of segment 4"),
    "reorder two segments": (lambda log: _swap(log.segments()[1][1], log.segments()[2][1]),
                             "should begin with the marker of segment 2"),
    "edit a segment's first record": (_edit_first_of, "should begin with the marker of segment 3"),
    "edit a segment's last record": (lambda log: _edit_last_of(log, rehash=False), "was edited"),
    "edit a segment's last record, rehashed": (lambda log: _edit_last_of(log, rehash=True),
                                               "should begin with the marker of segment 3"),
    "truncate the last rotated segment": (lambda log: _cut_last_line(log.segments()[-1][1]),
                                          "should begin with the marker of segment 5"),
    "empty a rotated segment": (lambda log: log.segments()[1][1].write_text(""), "is empty"),
    "cut the active file's tail": (lambda log: _cut_last_line(log.path), "records were deleted from the end"),
}


@pytest.mark.parametrize("kind", list(TAMPER))
def test_tampering_across_segments_is_reported(kind: str) -> None:
    log = _log(10)
    assert log.verify().ok
    tamper, words = TAMPER[kind]
    tamper(log)
    rep = log.verify()
    assert not rep.ok and words in (rep.problem or ""), rep.problem


def test_a_cut_tail_still_refuses_appends_after_rotation() -> None:
    log = _log(10)
    _cut_last_line(log.path)
    with pytest.raises(AuditError, match="cannot be extended"):
        log.append({"kind": "decision"})
    log.path.unlink()  # the whole active file removed: the head still names a record after the last segment
    with pytest.raises(AuditError, match="cannot be extended"):
        log.append({"kind": "decision"})


def test_a_crash_between_rename_and_marker_is_completed_by_the_next_append() -> None:
    log = _log(5)
    os.rename(log.path, log.segment_path(len(log.segments()) + 1))  # rotated, the marker not yet written
    assert log.verify().ok, "the head names the last segment's last record"
    rec = log.append({"kind": "decision", "i": 99})
    first = json.loads(_lines(log.path)[0])
    assert first["kind"] == SEGMENT_START and first["segment"] == len(log.segments()) + 1
    assert rec["seq"] == first["seq"] + 1 and log.verify().ok


def test_cli_and_console_read_across_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    from autooptimizer.console.views.audit import audit_page

    monkeypatch.setenv("AUTOOPT_AUDIT_SEGMENT_RECORDS", "3")
    get_settings.cache_clear()
    log = _log(10, max_records=3)
    assert AuditLog().max_records == 3
    runner = CliRunner()
    ok = runner.invoke(app, ["audit", "verify"])
    assert ok.exit_code == 0 and "14 records" in ok.output
    tail = [json.loads(x) for x in runner.invoke(app, ["audit", "tail", "-n", "14"]).stdout.splitlines()]
    assert [r["seq"] for r in tail] == list(range(1, 15))
    page = audit_page(query='"i":0')
    assert page.ok and page.records_total == 14 and [r["seq"] for r in page.rows] == [1], "a record of segment 1"
    log.segments()[1][1].unlink()
    bad = runner.invoke(app, ["audit", "verify"])
    assert bad.exit_code == 1 and "segment 2" in bad.output
    assert audit_page().ok is False
