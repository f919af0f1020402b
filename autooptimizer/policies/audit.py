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

Segments: once the active file reaches `AUTOOPT_AUDIT_SEGMENT_BYTES` (default 16 MiB) or
`AUTOOPT_AUDIT_SEGMENT_RECORDS` records (default 0: no record limit), `append` renames it to `audit.NNNNNN.jsonl`
(1, 2, ... oldest first) and starts a new `audit.jsonl` whose first record is a `segment_start` marker naming the
segment it continues (`previous`: file, segment, last_seq, head_hash). `seq` and `prev_hash` run on unbroken across
segments, and `audit.head` always names the newest record, so the tail-anchor checks above hold as before. `verify`
walks every segment in order and also reports a missing segment (deleted), segments out of order (renamed or
swapped), a marker that does not name the segment before it, and a rotated segment that is empty. A crash between
the rename and the marker leaves an empty active file after a segment; `append` writes the marker then.

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
_FIX = ("Run `autoopt audit verify` to see what is wrong and keep audit.jsonl, its segments audit.NNNNNN.jsonl and "
        "audit.head as evidence. To write again, restore them from a backup, or move them all aside (e.g. to a "
        "broken/ folder) so a new chain starts.")
SEGMENT_START = "segment_start"


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


def _first_record(path: Path) -> dict[str, Any] | None:
    """The first line of a file, parsed (None when there is none or it is not a record)."""
    with path.open("rb") as f:
        return _parse(f.readline())


def _fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replay_context(recorded: dict[str, Any] | None) -> dict[str, Any]:
    """A recorded context as it is re-decided. Records from before run scopes existed have no `in_scope`: they were
    unscoped calls, so they replay with in_scope true (a missing key would read as false and flip their decision)."""
    recorded = dict(recorded or {})
    recorded.setdefault("in_scope", True)
    return recorded


class AuditLog:
    """Append, read, verify and replay the audit trail. With no path it follows the current AUTOOPT_HOME."""

    def __init__(self, path: Path | None = None, *, max_bytes: int | None = None,
                 max_records: int | None = None) -> None:
        from autooptimizer.settings import get_settings

        settings = get_settings()
        if path is None:
            path = settings.path("audit", "audit.jsonl")
        self.path = Path(path)
        self.head_path = self.path.with_name(self.path.stem + ".head")
        self.lock_path = self.path.with_name(self.path.stem + ".lock")
        self.max_bytes = settings.audit_segment_bytes if max_bytes is None else max_bytes
        self.max_records = settings.audit_segment_records if max_records is None else max_records

    # --- segments ---------------------------------------------------------------------------------------------
    def segment_path(self, index: int) -> Path:
        return self.path.with_name(f"{self.path.stem}.{index:06d}{self.path.suffix}")

    def segments(self) -> list[tuple[int, Path]]:
        """The rotated segments (index, path), oldest first; the active file (`path`) follows them."""
        out: list[tuple[int, Path]] = []
        for p in self.path.parent.glob(f"{self.path.stem}.*{self.path.suffix}"):
            middle = p.name[len(self.path.stem) + 1: len(p.name) - len(self.path.suffix)]
            if middle.isdigit() and len(middle) == 6:
                out.append((int(middle), p))
        return sorted(out)

    def files(self) -> list[Path]:
        """Every file of the chain in order: the rotated segments, then the active file."""
        return [p for _, p in self.segments()] + [self.path]

    def _base(self) -> tuple[int, str, int]:
        """(seq, hash) of the record before the active file's first one, and the active file's segment number:
        (0, GENESIS, 1) without segments, else the last rotated segment's last record (which must be sound)."""
        segs = self.segments()
        if not segs:
            return 0, GENESIS, 1
        index, last = segs[-1]
        tail = _read_tail(last, 1)
        rec = _parse(tail.lines[-1]) if tail.lines and not tail.torn else None
        if not _sound(rec):
            raise self._refuse(f"the last record of segment {last.name} is missing or damaged")
        return int(rec["seq"]), str(rec["hash"]), index + 1

    def _rotate(self, seq: int, hash_: str) -> tuple[int, str]:
        """Rename the active file to the next segment and start the new one with its marker record."""
        segs = self.segments()
        index = (segs[-1][0] if segs else 0) + 1
        target = self.segment_path(index)
        os.rename(self.path, target)
        _fsync_dir(self.path.parent)
        return self._marker(index + 1, target, seq, hash_)

    def _marker(self, segment: int, previous: Path, seq: int, hash_: str) -> tuple[int, str]:
        rec = self._write_record({"kind": SEGMENT_START, "segment": segment,
                                  "previous": {"file": previous.name, "segment": segment - 1, "last_seq": seq,
                                               "head_hash": hash_}}, seq, hash_)
        return rec["seq"], rec["hash"]

    def _full(self, seq: int) -> bool:
        """Whether the active file has reached the size or record threshold (so the next record starts a new one)."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return False
        if size == 0:
            return False
        if self.max_bytes and size >= self.max_bytes:
            return True
        if self.max_records:
            first = _first_record(self.path)
            return first is not None and seq - int(first.get("seq", seq)) + 1 >= self.max_records
        return False

    # --- writing ----------------------------------------------------------------------------------------------
    def append(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Append one record (fields + seq, time, prev_hash, hash) under the file lock; returns it.

        Raises AuditError, writing nothing, when the log's tail does not match the head (see the module doc).
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(self.lock_path):  # threads and processes alike: one writer at a time
            prev_seq, prev_hash = self._checked_tail()
            segs = self.segments()
            if segs and (not self.path.exists() or self.path.stat().st_size == 0):
                prev_seq, prev_hash = self._marker(segs[-1][0] + 1, segs[-1][1], prev_seq, prev_hash)  # crash
            elif self._full(prev_seq):
                prev_seq, prev_hash = self._rotate(prev_seq, prev_hash)
            return self._write_record(fields, prev_seq, prev_hash)

    def _write_record(self, fields: dict[str, Any], prev_seq: int, prev_hash: str) -> dict[str, Any]:
        """Chain one record after (prev_seq, prev_hash), append it to the active file and move the head to it."""
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
        if not head_exists and tail.size == 0 and not self.segments():
            self._write_head(0, GENESIS)  # a new chain: the head exists before its first record
            return 0, GENESIS
        if not head_exists:
            raise self._refuse(f"{self.head_path.name} is missing while the log has records, so records cut off "
                               "the end could not be told apart")
        if head is None or not isinstance(head.get("seq"), int) or not isinstance(head.get("hash"), str):
            raise self._refuse(f"{self.head_path.name} is unreadable")
        head_seq, head_hash = int(head["seq"]), str(head["hash"])
        base_seq, base_hash, _ = self._base()
        recs: list[dict[str, Any]] = []
        for i, raw in enumerate(tail.lines):
            rec = _parse(raw)
            if not _sound(rec):
                raise self._refuse(f"record {len(tail.lines) - i} from the end is not a well-formed record with a "
                                   "matching hash (edited or damaged)")
            before: dict[str, Any] | None = recs[-1] if recs else (
                {"seq": base_seq, "hash": base_hash} if tail.from_start else None)
            if before is not None and (rec["seq"] != before["seq"] + 1 or rec.get("prev_hash") != before["hash"]):
                raise self._refuse(f"record {rec['seq']} does not follow record {before['seq']} (a record near the "
                                   "end was deleted, inserted, moved or changed)")
            recs.append(rec)
        last_seq, last_hash = (int(recs[-1]["seq"]), str(recs[-1]["hash"])) if recs else (base_seq, base_hash)
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
        """Every record, oldest first, across the rotated segments and the active file."""
        for path in self.files():
            if not path.exists():
                continue
            with path.open("rb") as f:
                for raw in f:
                    if raw.strip():
                        yield json.loads(raw)

    def verify(self) -> VerifyReport:
        """Walk the chain through every segment, oldest first; report the first record that does not fit (edit,
        deletion, insertion, reorder, torn write) or the first segment that is missing, out of order or does not
        name the one before it; then check the end against the head (truncation). A head exactly one record behind
        a record that chains to it is the trace of a crash between write and head update, and is accepted."""
        prev_seq, prev_hash = 0, GENESIS
        segs = self.segments()
        for expected, (index, path) in enumerate(segs, 1):
            if index != expected:
                return VerifyReport(ok=False, records=prev_seq, broken_seq=prev_seq + 1,
                                    problem=f"segment {expected} ({self.segment_path(expected).name}) is missing: "
                                    f"the next one is {path.name}; a segment was deleted or renamed")
            bad, prev_seq, prev_hash = self._verify_file(path, index, prev_seq, prev_hash, rotated=True)
            if bad is not None:
                return bad
        bad, prev_seq, prev_hash = self._verify_file(self.path, len(segs) + 1, prev_seq, prev_hash, rotated=False)
        if bad is not None:
            return bad
        n = prev_seq
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

    def _verify_file(self, path: Path, index: int, prev_seq: int, prev_hash: str, *, rotated: bool
                     ) -> tuple[VerifyReport | None, int, str]:
        """Check one file of the chain (segment `index`) after (prev_seq, prev_hash); returns (problem or None,
        the last seq and hash). A segment after the first must begin with the marker naming the one before it."""
        where = f" of {path.name}" if self.segments() else ""
        line_no = 0
        if path.exists():
            with path.open("rb") as f:
                for line_no, raw in enumerate(f, 1):
                    rec = _parse(raw)
                    if rotated and not raw.endswith(b"\n"):
                        return VerifyReport(ok=False, records=prev_seq, broken_line=line_no,
                                            problem=f"line {line_no}{where} ends without a newline: the rotated "
                                            "segment was cut or edited"), prev_seq, prev_hash
                    bad = self._check_start(path, index, rec, prev_seq, prev_hash) \
                        if line_no == 1 and rec is not None else None  # a segment out of place, named as such
                    bad = bad or self._check_line(line_no, raw, rec, prev_seq, prev_hash, where)
                    if bad is not None or rec is None:
                        return bad or VerifyReport(ok=False, records=prev_seq, broken_line=line_no,
                                                   problem="unreadable"), prev_seq, prev_hash
                    prev_seq, prev_hash = int(rec["seq"]), str(rec["hash"])
        if rotated and line_no == 0:
            return VerifyReport(ok=False, records=prev_seq, problem=f"segment {path.name} is empty: a rotated "
                                "segment always holds records, so its records were removed"), prev_seq, prev_hash
        return None, prev_seq, prev_hash

    def _check_start(self, path: Path, index: int, rec: dict[str, Any], prev_seq: int, prev_hash: str
                     ) -> VerifyReport | None:
        """The first record of segment `index`: the marker naming segment index - 1 and its head (none in the
        first segment)."""
        is_marker = rec.get("kind") == SEGMENT_START
        seq = rec.get("seq") if isinstance(rec.get("seq"), int) and not isinstance(rec.get("seq"), bool) else None
        if index == 1:
            if not is_marker:
                return None
            return VerifyReport(ok=False, records=prev_seq, broken_seq=seq, broken_line=1,
                                problem=f"{path.name} begins with the marker of segment {rec.get('segment')}, but "
                                "it is the first segment: earlier segments were deleted")
        prev_file = self.segment_path(index - 1).name
        want = {"file": prev_file, "segment": index - 1, "last_seq": prev_seq, "head_hash": prev_hash}
        if not is_marker or rec.get("segment") != index or rec.get("previous") != want:
            got = f"segment {rec.get('segment')}" if is_marker else "no segment marker"
            return VerifyReport(ok=False, records=prev_seq, broken_seq=seq, broken_line=1,
                                problem=f"{path.name} should begin with the marker of segment {index} naming "
                                f"{prev_file} (record {prev_seq}, its head hash) but holds {got}: segments were "
                                "reordered, replaced or edited at the boundary")
        return None

    @staticmethod
    def _check_line(line_no: int, raw: bytes, rec: dict[str, Any] | None, prev_seq: int, prev_hash: str,
                    where: str = "") -> VerifyReport | None:
        """None when line `line_no` (`raw`, parsed as `rec`) is the record that must follow record `prev_seq`
        (hash `prev_hash`), else what is wrong with it. `where` names the segment file when there are several."""
        expected = prev_seq + 1
        if not raw.endswith(b"\n"):  # only the last line can lack its newline
            if rec is None:
                return VerifyReport(ok=False, records=prev_seq, broken_line=line_no,
                                    problem=f"line {line_no}{where} is a torn write (no newline, not a JSON record): "
                                    "an append was cut short by a crash; the next append removes it if the head "
                                    "names the record before it")
            return VerifyReport(ok=False, records=prev_seq, broken_line=line_no,
                                problem=f"line {line_no}{where} ends without a newline: the file was cut or edited")
        if rec is None:
            return VerifyReport(ok=False, records=prev_seq, broken_line=line_no,
                                problem=f"line {line_no}{where} is not a JSON record")
        seq = rec.get("seq")
        if seq != expected:
            what = "an earlier record was deleted, or records were reordered" if isinstance(seq, int) and \
                seq > expected else "records were reordered, inserted or duplicated"
            return VerifyReport(ok=False, records=prev_seq, broken_line=line_no,
                                broken_seq=seq if isinstance(seq, int) and not isinstance(seq, bool) else None,
                                problem=f"line {line_no}{where} holds seq {seq!r}, expected {expected}: {what}")
        if rec.get("prev_hash") != prev_hash:  # from here on seq == expected
            return VerifyReport(ok=False, records=prev_seq, broken_line=line_no, broken_seq=expected,
                                problem=f"record {expected} does not chain to record {prev_seq} "
                                "(prev_hash differs): a record before it was changed, removed or moved")
        if not _sound(rec):
            return VerifyReport(ok=False, records=prev_seq, broken_line=line_no, broken_seq=expected,
                                problem=f"record {expected} was edited (its hash does not match its content)")
        return None

    def _prev_hash_of_last(self) -> str | None:
        tail = _read_tail(self.path, 1)
        if not tail.lines and self.segments():
            tail = _read_tail(self.segments()[-1][1], 1)
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
