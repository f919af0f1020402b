"""Tamper-evident audit trail: a hash-chained JSONL file under AUTOOPT_HOME/audit/.

Each line is one record with `seq` (1, 2, ...), `prev_hash` (the previous record's hash; 64 zeros for the first)
and `hash` = sha256 of the record's canonical JSON without `hash`. `audit.head` holds the last seq and hash, so
deleting records from the end is caught too. Appends hold an exclusive `fcntl.flock` on `audit.lock` (plus a
thread lock), so concurrent threads and processes extend one unbroken chain.

This detects edits, deletions and reordering; someone who can rewrite the whole file and the head can forge a
new chain, so ship `audit.head` hashes off the box if that matters (see docs/policies.md).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from autooptimizer.errors import AutoOptError

if TYPE_CHECKING:
    from autooptimizer.tools.registry import ToolCallResult

GENESIS = "0" * 64
_THREAD_LOCK = threading.Lock()


class AuditError(AutoOptError):
    """The audit log cannot be written; callers must not act without a record."""


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def record_hash(record: dict) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(canonical(body).encode()).hexdigest()


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


def _last_line(path: Path) -> bytes | None:
    """The last non-empty line of a file, reading backwards in chunks."""
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        end = f.tell()
        buf = b""
        pos = end
        while pos > 0:
            step = min(65536, pos)
            pos -= step
            f.seek(pos)
            buf = f.read(step) + buf
            stripped = buf.rstrip(b"\n")
            nl = stripped.rfind(b"\n")
            if nl >= 0:
                return stripped[nl + 1:]
        stripped = buf.rstrip(b"\n")
        return stripped or None


def replay_context(recorded: dict | None) -> dict:
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
    def append(self, fields: dict) -> dict:
        """Append one record (fields + seq, time, prev_hash, hash) under the file lock; returns it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _THREAD_LOCK, self.lock_path.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                prev_seq, prev_hash = 0, GENESIS
                if self.path.exists():
                    last = _last_line(self.path)
                    if last is not None:
                        try:
                            rec = json.loads(last)
                            prev_seq, prev_hash = int(rec["seq"]), str(rec["hash"])
                        except (ValueError, KeyError, TypeError) as exc:
                            raise AuditError(f"The last record of {self.path} is unreadable ({exc}).",
                                             "Run `autoopt audit verify`; move the damaged log aside to start a "
                                             "new chain.") from exc
                now = time.time()
                record = {"seq": prev_seq + 1, "time": datetime.fromtimestamp(now, UTC).isoformat(), "ts": now,
                          **{k: v for k, v in fields.items() if k not in ("seq", "prev_hash", "hash")},
                          "prev_hash": prev_hash}
                record = json.loads(canonical(record))  # exactly what will be hashed and re-read
                record["hash"] = record_hash(record)
                line = (canonical(record) + "\n").encode()
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
                try:
                    os.write(fd, line)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                tmp = self.head_path.with_suffix(f".tmp{os.getpid()}.{threading.get_ident()}")
                tmp.write_text(json.dumps({"seq": record["seq"], "hash": record["hash"]}))
                os.replace(tmp, self.head_path)
                return record
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def append_call(self, phase: str, res: ToolCallResult, *, context: dict, actor: str,
                    result_summary: Any = None, pdp: dict | None = None) -> dict:
        """Record a registry decision (phase "decision") or a tool's outcome (phase "result").

        `pdp` is the PDP's own answer ({"decision", "policies"}), or None when the registry stopped the call
        before asking (bad args, unknown tool); replay re-checks only records that have it.
        """
        fields = {"kind": phase, "actor": actor, "agent": res.agent, "tool": res.tool, "env": res.env,
                  "args": res.args, "decision": res.decision, "policies": res.policies, "reason": res.reason,
                  "context": context, "pdp": pdp, "executed": res.executed, "error": res.error,
                  "approval_id": res.approval_id, "trace_id": res.trace_id, "cycle_id": res.cycle_id}
        if phase == "result":
            fields["result"] = result_summary
        return self.append(fields)

    # --- reading ----------------------------------------------------------------------------------------------
    def records(self) -> Iterator[dict]:
        if not self.path.exists():
            return
        with self.path.open("rb") as f:
            for raw in f:
                if raw.strip():
                    yield json.loads(raw)

    def verify(self) -> VerifyReport:
        """Walk the chain; the first record that does not fit is reported (edit, deletion, reorder, truncation)."""
        prev_hash, n = GENESIS, 0
        if self.path.exists():
            with self.path.open("rb") as f:
                for line_no, raw in enumerate(f, 1):
                    n = line_no
                    try:
                        rec = json.loads(raw)
                        seq = rec.get("seq")
                    except (ValueError, AttributeError):
                        return VerifyReport(ok=False, records=line_no - 1, broken_line=line_no,
                                            problem=f"line {line_no} is not a JSON record")
                    if seq != line_no:
                        what = "an earlier record was deleted" if isinstance(seq, int) and seq > line_no else \
                            "records were reordered or duplicated"
                        return VerifyReport(ok=False, records=line_no - 1, broken_line=line_no,
                                            broken_seq=seq if isinstance(seq, int) else None,
                                            problem=f"line {line_no} holds seq {seq}, expected {line_no}: {what}")
                    if rec.get("prev_hash") != prev_hash:
                        return VerifyReport(ok=False, records=line_no - 1, broken_line=line_no, broken_seq=seq,
                                            problem=f"record {seq} does not chain to record {seq - 1} "
                                            "(prev_hash differs): a record before it was changed, removed or moved")
                    if record_hash(rec) != rec.get("hash"):
                        return VerifyReport(ok=False, records=line_no - 1, broken_line=line_no, broken_seq=seq,
                                            problem=f"record {seq} was edited (its hash does not match its content)")
                    prev_hash = rec["hash"]
        head = self._head()
        if head is None:
            if n:
                return VerifyReport(ok=False, records=n, problem=f"{self.head_path.name} is missing or unreadable")
            return VerifyReport(ok=True, records=0)
        if head.get("seq") != n or head.get("hash") != prev_hash:
            return VerifyReport(ok=False, records=n, broken_seq=n + 1 if head.get("seq", 0) > n else head.get("seq"),
                                problem=f"the log ends at record {n} but {self.head_path.name} says record "
                                f"{head.get('seq')}: records were deleted from the end or the head was altered")
        return VerifyReport(ok=True, records=n)

    def _head(self) -> dict | None:
        try:
            data = json.loads(self.head_path.read_text())
            return data if isinstance(data, dict) else None
        except (OSError, ValueError):
            return None

    def replay(self, cycle_id: str) -> ReplayReport:
        """Re-decide every PDP decision recorded for `cycle_id` with today's policies; list those that differ."""
        from autooptimizer.policies.pdp import get_pdp

        diffs, evaluated = [], 0
        for rec in self.records():
            if rec.get("cycle_id") != cycle_id or rec.get("kind") not in ("decision", "check"):
                continue
            old = rec.get("pdp")
            if not isinstance(old, dict):
                continue
            evaluated += 1
            now = get_pdp(rec["env"]).decide(rec["agent"], rec["tool"], replay_context(rec.get("context")))
            if now.decision != old.get("decision") or sorted(now.policies) != sorted(old.get("policies") or []):
                diffs.append(ReplayDiff(seq=rec["seq"], agent=rec["agent"], tool=rec["tool"], env=rec["env"],
                                        recorded=old.get("decision", "?"), recorded_policies=old.get("policies") or [],
                                        now=now.decision, now_policies=now.policies, now_reason=now.reason))
        return ReplayReport(cycle_id=cycle_id, evaluated=evaluated, differences=diffs)
