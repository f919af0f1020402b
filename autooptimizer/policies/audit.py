"""Tamper-evident audit trail: a hash-chained JSONL file under AUTOOPT_HOME/audit/.

Each line is one record with `seq` (1, 2, ...), `prev_hash` (the previous record's hash; 64 zeros for the first)
and `hash` = sha256 of the record's canonical JSON without `hash`. `audit.head` holds the last seq and hash
(`{"seq": 0, "hash": GENESIS}` is written before the first record of a new log), so deleting records from the
end is caught too. Appends hold an exclusive `filelock.FileLock` on `audit.lock`, so concurrent
threads and processes extend one unbroken chain.

What `verify` reports (exit 1 from `autoopt audit verify`): an edited record (its hash does not match), a
deleted, inserted, duplicated or moved record (seq or prev_hash out of line), a line that is not a record, a
torn last line (a crash cut an append short), and a log that ends before the record `audit.head` names
(truncation) or has records but no head. It reports the first problem; records are never rewritten, so a
problem stays visible however many records follow it.

What `append` refuses (AuditError naming the problem and the fix; the registry turns it into a deny,
`registry.audit-unavailable`, so nothing runs while the trail is broken): extending a log whose tail does not
match the head, i.e. records cut off the end (the head names a later record), a head that is missing while the
log has records, an unreadable head, and a tail whose last `TAIL_CHECK` records do not chain to each other or
whose last record's hash is wrong. Without this, one ordinary write would chain from whatever the file ends
with, rewrite the head, and make a truncation verify OK. Tampering further back than `TAIL_CHECK` records is not
re-read on every append (that would cost O(log size) per write), but it cannot be hidden by appends either:
`verify` keeps reporting it.

Crash cases `append` repairs instead of refusing, because they are what an interrupted append leaves:
- the log is exactly one record ahead of the head and that record chains to the head's hash (a crash between
  the fsynced line write and the head replace): `append` moves the head forward (warning) and goes on, and
  `verify` accepts this state;
- a torn last line (no trailing newline, not JSON) after the record the head names (a crash during the line
  write): `append` truncates the torn bytes (warning) and goes on; `verify` reports the torn write until then.

This detects edits, deletions and reordering; someone who can rewrite the whole file and the head can forge a
new chain, so ship `audit.head` hashes off the box if that matters (see docs/policies.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeGuard, cast

from filelock import FileLock
from pydantic import BaseModel

from autooptimizer.errors import AutoOptError
from autooptimizer.jsonsafe import to_json_safe

GENESIS = "0" * 64
TAIL_CHECK = 8  # records at the end of the log that every append re-checks (links and hashes)
_TAIL_BYTES = 1 << 20  # ... read from at most this many bytes (but always the last two lines)
log = logging.getLogger(__name__)
_FIX = ("Run `autoopt audit verify` to see what is wrong and keep audit.jsonl and audit.head as evidence. To "
        "write again, restore both from a backup, or move both aside (e.g. to *.broken) so a new chain starts.")


class AuditError(AutoOptError):
    """The audit log cannot be written; callers must not act without a record."""


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def record_hash(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(canonical(body).encode()).hexdigest()


def _encodable(record: dict[str, Any]) -> dict[str, Any]:
    """The record as it will be stored (a JSON round trip). Fields that canonical JSON cannot hold as they are
    (nested too deep, huge ints, lone surrogates, ...) are stored in their `to_json_safe` form, marked
    `sanitized`, so a record is always written rather than the write failing."""
    try:
        return json.loads(canonical(record).encode("utf-8"))
    except (ValueError, TypeError, RecursionError) as exc:  # UnicodeEncodeError is a ValueError
        safe = to_json_safe({k: v for k, v in record.items()}, max_depth=64, max_items=10_000, max_str=1 << 20,
                            max_nodes=1 << 20)
        safe["sanitized"] = f"fields were not JSON as they were ({type(exc).__name__}); stored in a safe form"
        return json.loads(canonical(safe))


class VerifyReport(BaseModel):
    ok: bool
    records: int
    broken_seq: int | None = None
    broken_line: int | None = None
    problem: str | None = None


class ReplayDiff(BaseModel):
    seq: int
    agent: str
    tool: str
    env: str
    recorded: str
    recorded_policies: list[str]
    now: str
    now_policies: list[str]
    now_reason: str


class ReplayReport(BaseModel):
    cycle_id: str
    evaluated: int
    differences: list[ReplayDiff]


def _parse(raw: bytes) -> dict[str, Any] | None:
    """A record line as a dict, or None when it is not JSON (a deeply nested line is not a record either)."""
    try:
        rec: object = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return cast("dict[str, Any]", rec) if isinstance(rec, dict) else None


def _sound(rec: dict[str, Any] | None) -> TypeGuard[dict[str, Any]]:
    """Whether a parsed line is a well-formed record whose hash matches its content."""
    if rec is None or not isinstance(rec.get("seq"), int) or not isinstance(rec.get("hash"), str):
        return False
    try:
        return record_hash(rec) == rec["hash"]
    except (ValueError, TypeError, RecursionError):
        return False


@dataclass
class _Tail:
    """The end of the log: its size, its last complete lines (oldest first) and any torn bytes after them."""

    size: int = 0
    lines: list[bytes] = field(default_factory=lambda: list[bytes]())
    torn: bytes = b""
    complete_end: int = 0  # offset just after the last newline
    from_start: bool = True  # `lines` begins with line 1


def _read_tail(path: Path, want: int) -> _Tail:
    """The last `want` complete lines (fewer near the start; read within `_TAIL_BYTES`, but always two)."""
    if not path.exists():
        return _Tail()
    with path.open("rb") as f:
        size = f.seek(0, os.SEEK_END)
        buf, pos = b"", size
        while pos > 0:
            step = min(65536, pos)
            pos -= step
            f.seek(pos)
            buf = f.read(step) + buf
            if buf.count(b"\n") > want or (size - pos > _TAIL_BYTES and buf.count(b"\n") > 2):
                break
    cut = buf.rfind(b"\n") + 1  # 0 when there is no newline at all
    torn, body = buf[cut:], buf[:cut]
    lines = body.split(b"\n")[:-1] if body else []
    from_start = pos == 0
    if not from_start and lines:
        lines = lines[1:]  # the first piece may be the end of an earlier line
    return _Tail(size=size, lines=lines[-want:], torn=torn, complete_end=size - len(torn),
                 from_start=from_start and len(lines) <= want)


def replay_context(recorded: dict[str, Any] | None) -> dict[str, Any]:
    """A recorded context as it is re-decided. Records from before run scopes existed have no `in_scope`: they were
    unscoped calls, so they replay with in_scope true (a missing key would read as false and flip their decision)."""
    recorded = dict(recorded or {})
    recorded.setdefault("in_scope", True)
    return recorded


class AuditLog:
    """Append, read, verify and replay the audit trail. With no path it follows the current AUTOOPT_HOME."""

    def __init__(self, path: Path | None = None) -> None:
        if path is None:
            from autooptimizer.settings import get_settings

            path = get_settings().path("audit", "audit.jsonl")
        self.path = Path(path)
        self.head_path = self.path.with_name(self.path.stem + ".head")
        self.lock_path = self.path.with_name(self.path.stem + ".lock")

    # --- writing ----------------------------------------------------------------------------------------------
    def append(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Append one record (fields + seq, time, prev_hash, hash) under the file lock; returns it.

        Raises AuditError, writing nothing, when the log's tail does not match the head (see the module doc).
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(self.lock_path):  # threads and processes alike: one writer at a time
            prev_seq, prev_hash = self._checked_tail()
            now = time.time()
            record = {"seq": prev_seq + 1, "time": datetime.fromtimestamp(now, UTC).isoformat(), "ts": now,
                      **{k: v for k, v in fields.items() if k not in ("seq", "prev_hash", "hash")},
                      "prev_hash": prev_hash}
            record = _encodable(record)  # exactly what will be hashed and re-read
            record["hash"] = record_hash(record)
            line = (canonical(record) + "\n").encode()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
            self._write_head(record["seq"], record["hash"])
            return record

    def _write_head(self, seq: int, hash_: str) -> None:
        tmp = self.head_path.with_suffix(f".tmp{os.getpid()}.{threading.get_ident()}")
        with tmp.open("w") as f:
            f.write(json.dumps({"seq": seq, "hash": hash_}))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.head_path)

    def _refuse(self, problem: str) -> AuditError:
        return AuditError(f"The audit log {self.path} cannot be extended: {problem}.", _FIX)

    def _checked_tail(self) -> tuple[int, str]:
        """(seq, hash) to chain the next record from, once the log's tail is known to match the head.

        Called under the lock. Starts a new chain (head first) for a new log, repairs the two crash states
        (head one record behind; torn last line) and raises AuditError for anything else that does not fit.
        """
        tail = _read_tail(self.path, TAIL_CHECK)
        head_exists = self.head_path.exists()
        head = self._head()
        if not head_exists and tail.size == 0:
            self._write_head(0, GENESIS)  # a new chain: the head exists before its first record
            return 0, GENESIS
        if not head_exists:
            raise self._refuse(f"{self.head_path.name} is missing while the log has records, so records cut off "
                               "the end could not be told apart")
        if head is None or not isinstance(head.get("seq"), int) or not isinstance(head.get("hash"), str):
            raise self._refuse(f"{self.head_path.name} is unreadable")
        head_seq, head_hash = int(head["seq"]), str(head["hash"])
        recs: list[dict[str, Any]] = []
        for i, raw in enumerate(tail.lines):
            rec = _parse(raw)
            if not _sound(rec):
                raise self._refuse(f"record {len(tail.lines) - i} from the end is not a well-formed record with a "
                                   "matching hash (edited or damaged)")
            before: dict[str, Any] | None = recs[-1] if recs else (
                {"seq": 0, "hash": GENESIS} if tail.from_start else None)
            if before is not None and (rec["seq"] != before["seq"] + 1 or rec.get("prev_hash") != before["hash"]):
                raise self._refuse(f"record {rec['seq']} does not follow record {before['seq']} (a record near the "
                                   "end was deleted, inserted, moved or changed)")
            recs.append(rec)
        last_seq, last_hash = (int(recs[-1]["seq"]), str(recs[-1]["hash"])) if recs else (0, GENESIS)
        if tail.torn:
            if _parse(tail.torn) is not None or (last_seq, last_hash) != (head_seq, head_hash):
                raise self._refuse(f"the log ends with {len(tail.torn)} bytes without a newline that are not a torn "
                                   f"write after record {head_seq} (the record {self.head_path.name} names)")
            log.warning("audit log %s ends with a torn write (%d bytes, a crash during an append); truncating it",
                        self.path, len(tail.torn))
            with self.path.open("r+b") as f:
                f.truncate(tail.complete_end)
                os.fsync(f.fileno())
            return last_seq, last_hash
        if (last_seq, last_hash) == (head_seq, head_hash):
            return last_seq, last_hash
        if recs and last_seq == head_seq + 1 and recs[-1].get("prev_hash") == head_hash:
            log.warning("audit head %s is one record behind the log (a crash between the write and the head "
                        "update); moving it to record %d", self.head_path, last_seq)
            self._write_head(last_seq, last_hash)
            return last_seq, last_hash
        raise self._refuse(f"the log ends at record {last_seq} but {self.head_path.name} names record {head_seq}"
                           ": records were cut off the end, or the log or head was altered")

    # --- reading ----------------------------------------------------------------------------------------------
    def records(self) -> Iterator[dict[str, Any]]:
        if not self.path.exists():
            return
        with self.path.open("rb") as f:
            for raw in f:
                if raw.strip():
                    yield json.loads(raw)

    def verify(self) -> VerifyReport:
        """Walk the chain; report the first record that does not fit (edit, deletion, insertion, reorder, torn
        write), then check the end against the head (truncation). A head exactly one record behind a record that
        chains to it is the trace of a crash between write and head update, and is accepted."""
        prev_hash, n = GENESIS, 0
        if self.path.exists():
            with self.path.open("rb") as f:
                for line_no, raw in enumerate(f, 1):
                    rec = _parse(raw)
                    bad = self._check_line(line_no, raw, rec, prev_hash)
                    if bad is not None or rec is None:
                        return bad or VerifyReport(ok=False, records=n, broken_line=line_no, problem="unreadable")
                    n, prev_hash = line_no, rec["hash"]
        head = self._head()
        if head is None:
            if n or self.head_path.exists():
                return VerifyReport(ok=False, records=n, problem=f"{self.head_path.name} is missing or unreadable")
            return VerifyReport(ok=True, records=0)
        if head.get("seq") == n and head.get("hash") == prev_hash:
            return VerifyReport(ok=True, records=n)
        if n and head.get("seq") == n - 1 and head.get("hash") == self._prev_hash_of_last():
            log.warning("audit head %s is one record behind the log (a crash between the write and the head "
                        "update); the next append moves it forward", self.head_path)
            return VerifyReport(ok=True, records=n)
        seq = head.get("seq")
        return VerifyReport(ok=False, records=n, broken_seq=n + 1 if isinstance(seq, int) and seq > n else seq,
                            problem=f"the log ends at record {n} but {self.head_path.name} says record {seq}: "
                            "records were deleted from the end or the head was altered")

    @staticmethod
    def _check_line(line_no: int, raw: bytes, rec: dict[str, Any] | None, prev_hash: str) -> VerifyReport | None:
        """None when line `line_no` (`raw`, parsed as `rec`) is the record that must follow `prev_hash`, else
        what is wrong with it."""
        if not raw.endswith(b"\n"):  # only the last line can lack its newline
            if rec is None:
                return VerifyReport(ok=False, records=line_no - 1, broken_line=line_no,
                                    problem=f"line {line_no} is a torn write (no newline, not a JSON record): an "
                                    "append was cut short by a crash; the next append removes it if the head names "
                                    "the record before it")
            return VerifyReport(ok=False, records=line_no - 1, broken_line=line_no,
                                problem=f"line {line_no} ends without a newline: the file was cut or edited")
        if rec is None:
            return VerifyReport(ok=False, records=line_no - 1, broken_line=line_no,
                                problem=f"line {line_no} is not a JSON record")
        seq = rec.get("seq")
        if seq != line_no:
            what = "an earlier record was deleted, or records were reordered" if isinstance(seq, int) and \
                seq > line_no else "records were reordered, inserted or duplicated"
            return VerifyReport(ok=False, records=line_no - 1, broken_line=line_no,
                                broken_seq=seq if isinstance(seq, int) and not isinstance(seq, bool) else None,
                                problem=f"line {line_no} holds seq {seq!r}, expected {line_no}: {what}")
        if rec.get("prev_hash") != prev_hash:  # from here on seq == line_no
            return VerifyReport(ok=False, records=line_no - 1, broken_line=line_no, broken_seq=line_no,
                                problem=f"record {line_no} does not chain to record {line_no - 1} "
                                "(prev_hash differs): a record before it was changed, removed or moved")
        if not _sound(rec):
            return VerifyReport(ok=False, records=line_no - 1, broken_line=line_no, broken_seq=line_no,
                                problem=f"record {line_no} was edited (its hash does not match its content)")
        return None

    def _prev_hash_of_last(self) -> str | None:
        tail = _read_tail(self.path, 1)
        rec = _parse(tail.lines[-1]) if tail.lines else None
        return rec.get("prev_hash") if rec else None

    def _head(self) -> dict[str, Any] | None:
        try:
            data: object = json.loads(self.head_path.read_text())
        except (OSError, ValueError):
            return None
        return cast("dict[str, Any]", data) if isinstance(data, dict) else None

    def replay(self, cycle_id: str) -> ReplayReport:
        """Re-decide every PDP decision recorded for `cycle_id` with today's policies; list those that differ."""
        from autooptimizer.policies.pdp import get_pdp

        diffs: list[ReplayDiff] = []
        evaluated = 0
        for rec in self.records():
            if rec.get("cycle_id") != cycle_id or rec.get("kind") not in ("decision", "check"):
                continue
            pdp_answer: object = rec.get("pdp")
            if not isinstance(pdp_answer, dict):
                continue
            old = cast("dict[str, Any]", pdp_answer)
            evaluated += 1
            now = get_pdp(rec["env"]).decide(rec["agent"], rec["tool"], replay_context(rec.get("context")))
            if now.decision != old.get("decision") or sorted(now.policies) != sorted(old.get("policies") or []):
                diffs.append(ReplayDiff(seq=rec["seq"], agent=rec["agent"], tool=rec["tool"], env=rec["env"],
                                        recorded=old.get("decision", "?"), recorded_policies=old.get("policies") or [],
                                        now=now.decision, now_policies=now.policies, now_reason=now.reason))
        return ReplayReport(cycle_id=cycle_id, evaluated=evaluated, differences=diffs)
