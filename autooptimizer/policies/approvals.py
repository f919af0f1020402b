"""Human approvals as durable data (SQLite under AUTOOPT_HOME), not a thread blocked on input().

A `needs_approval` decision stores a request: what (tool, agent, env, canonical args), why (reason, policies),
the evidence and who asked. A person answers it (`autoopt approvals approve|deny ID`, the chat y/N prompt, or
the API); the agent then repeats the same call with `approval_id=ID`. The approval is bound to that exact call
(`call_hash` of tool + canonical args + agent + env) and is consumed atomically, so it works at most once.

Timeouts (AUTOOPT_APPROVAL_TIMEOUT_S, default 3600 s): a request unanswered past `expires_at` becomes denied
(decided_by "timeout"); an approved request must be used within the same span after the approval.

Library API (used by the chat and the REST API): `ApprovalStore().list/get/approve/deny/consume`.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
import uuid
from collections.abc import Generator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from autooptimizer.errors import InputError, NotFoundError

Status = Literal["pending", "approved", "denied", "used"]
DEFAULT_TIMEOUT_S = 3600.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS approvals (
  id TEXT PRIMARY KEY,
  tool TEXT NOT NULL, agent TEXT NOT NULL, env TEXT NOT NULL,
  args_json TEXT NOT NULL, call_hash TEXT NOT NULL,
  reason TEXT NOT NULL, policies_json TEXT NOT NULL, evidence_json TEXT,
  requested_by TEXT NOT NULL, trace_id TEXT, cycle_id TEXT,
  status TEXT NOT NULL, created_at REAL NOT NULL, expires_at REAL NOT NULL,
  decided_at REAL, decided_by TEXT, note TEXT, use_by REAL, used_at REAL
);
CREATE INDEX IF NOT EXISTS approvals_status ON approvals(status);
CREATE INDEX IF NOT EXISTS approvals_hash ON approvals(call_hash);
"""


def call_hash(tool: str, args: dict[str, Any], agent: str, env: str) -> str:
    """Identity of one exact call: any change to tool, args, agent or env gives another hash."""
    body = json.dumps({"tool": tool, "args": args, "agent": agent, "env": env}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(body.encode()).hexdigest()


class ApprovalRequest(BaseModel):
    id: str
    tool: str
    agent: str
    env: str
    args: dict[str, Any]
    call_hash: str
    reason: str
    policies: list[str]
    evidence: dict[str, Any] | None = None
    requested_by: str
    trace_id: str | None = None
    cycle_id: str | None = None
    status: Status
    created_at: float
    expires_at: float
    decided_at: float | None = None
    decided_by: str | None = None
    note: str | None = None
    use_by: float | None = None
    used_at: float | None = None


def _timeout_from_env() -> float:
    raw = os.environ.get("AUTOOPT_APPROVAL_TIMEOUT_S")
    try:
        return float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        return DEFAULT_TIMEOUT_S


class ApprovalStore:
    """All approval state lives in the SQLite file; a new store on the same file sees everything (restarts)."""

    def __init__(self, path: Path | None = None, timeout_s: float | None = None) -> None:
        if path is None:
            from autooptimizer.settings import get_settings

            path = get_settings().path("approvals.db")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.timeout_s = timeout_s if timeout_s is not None else _timeout_from_env()
        with self._tx() as db:
            db.executescript(_SCHEMA)

    @contextmanager
    def _tx(self) -> Generator[sqlite3.Connection, None, None]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA busy_timeout=30000")
            yield db
        finally:
            db.close()

    @staticmethod
    def _row(row: sqlite3.Row) -> ApprovalRequest:
        d = dict(row)
        d["args"] = json.loads(d.pop("args_json"))
        d["policies"] = json.loads(d.pop("policies_json"))
        ev = d.pop("evidence_json")
        d["evidence"] = json.loads(ev) if ev else None
        return ApprovalRequest(**d)

    def _expire(self, db: sqlite3.Connection, now: float) -> None:
        db.execute("UPDATE approvals SET status='denied', decided_at=?, decided_by='timeout', "
                   "note='no answer before the timeout' WHERE status='pending' AND expires_at<=?", (now, now))

    # --- creating ---------------------------------------------------------------------------------------------
    def request(self, *, tool: str, agent: str, env: str, args: dict[str, Any], call_hash_: str | None = None,
                reason: str, policies: list[str], evidence: dict[str, Any] | None = None, requested_by: str = "agent",
                trace_id: str | None = None, cycle_id: str | None = None) -> ApprovalRequest:
        """Store a new pending request and return it."""
        now = time.time()
        rid = "apr-" + uuid.uuid4().hex[:12]
        chash = call_hash_ or call_hash(tool, args, agent, env)
        with self._tx() as db, self._atomic(db):  # the request exists only once it is on record
            db.execute(
                "INSERT INTO approvals (id, tool, agent, env, args_json, call_hash, reason, policies_json, "
                "evidence_json, requested_by, trace_id, cycle_id, status, created_at, expires_at) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?, 'pending', ?, ?)",
                (rid, tool, agent, env, json.dumps(args, sort_keys=True, default=str), chash, reason,
                 json.dumps(policies), json.dumps(evidence, default=str) if evidence is not None else None,
                 requested_by, trace_id, cycle_id, now, now + self.timeout_s))
            self._audit("approval_requested", rid, requested_by, tool=tool, agent=agent, env=env, reason=reason)
        return self.get(rid)

    @staticmethod
    @contextmanager
    def _atomic(db: sqlite3.Connection) -> Generator[None, None, None]:
        """One write transaction: committed when the block (including its audit record) succeeds, else rolled
        back - so a change the audit log refused (AuditError) is not made either."""
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def request_or_reuse(self, **kw: object) -> ApprovalRequest:
        """The pending request for this exact call if one exists, else a new one (retries don't pile up)."""
        chash = kw.get("call_hash_") or call_hash(kw["tool"], kw["args"], kw["agent"], kw["env"])  # type: ignore[arg-type]
        now = time.time()
        with self._tx() as db:
            self._expire(db, now)
            row = db.execute("SELECT * FROM approvals WHERE call_hash=? AND status='pending' "
                             "ORDER BY created_at DESC LIMIT 1", (chash,)).fetchone()
        if row is not None:
            return self._row(row)
        kw["call_hash_"] = chash
        return self.request(**kw)  # type: ignore[arg-type]

    # --- reading ----------------------------------------------------------------------------------------------
    def list(self, status: Status | None = None) -> list[ApprovalRequest]:
        with self._tx() as db:
            self._expire(db, time.time())
            if status:
                rows = db.execute("SELECT * FROM approvals WHERE status=? ORDER BY created_at", (status,)).fetchall()
            else:
                rows = db.execute("SELECT * FROM approvals ORDER BY created_at").fetchall()
        return [self._row(r) for r in rows]

    def get(self, request_id: str) -> ApprovalRequest:
        with self._tx() as db:
            self._expire(db, time.time())
            row = db.execute("SELECT * FROM approvals WHERE id=?", (request_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"No approval request {request_id!r}.", "List them with `autoopt approvals list`.")
        return self._row(row)

    # --- answering --------------------------------------------------------------------------------------------
    def _answer(self, request_id: str, status: Status, by: str, note: str) -> ApprovalRequest:
        now = time.time()
        with self._tx() as db, self._atomic(db):  # the answer stands only once it is on record
            self._expire(db, now)
            cur = db.execute("UPDATE approvals SET status=?, decided_at=?, decided_by=?, note=?, use_by=? "
                             "WHERE id=? AND status='pending'",
                             (status, now, by, note, now + self.timeout_s if status == "approved" else None,
                              request_id))
            if cur.rowcount == 1:
                self._audit(f"approval_{status}", request_id, by, note=note)
        if cur.rowcount != 1:
            current = self.get(request_id)  # raises NotFoundError for an unknown id
            raise InputError(f"Approval request {request_id} is {current.status}"
                             + (f" ({current.note})" if current.note else "") + "; only pending requests can be "
                             "answered.", "Ask the agent to repeat the call to open a new request.")
        return self.get(request_id)

    def approve(self, request_id: str, by: str = "operator", note: str = "") -> ApprovalRequest:
        return self._answer(request_id, "approved", by, note)

    def deny(self, request_id: str, by: str = "operator", note: str = "") -> ApprovalRequest:
        return self._answer(request_id, "denied", by, note)

    # --- using ------------------------------------------------------------------------------------------------
    def check(self, request_id: str, call_hash_: str) -> tuple[bool, str | None]:
        """Whether `request_id` is an unused approval for exactly this call; if not, why not."""
        try:
            req = self.get(request_id)
        except NotFoundError:
            return False, f"Approval {request_id} does not exist."
        if req.call_hash != call_hash_:
            return False, (f"Approval {request_id} was given for a different call ({req.agent} -> {req.tool} "
                           f"with other arguments or env); it does not cover this one.")
        if req.status != "approved":
            return False, f"Approval {request_id} is {req.status}" + (f" ({req.note})" if req.note else "") + "."
        if req.use_by is not None and req.use_by < time.time():
            return False, f"Approval {request_id} expired before it was used."
        return True, None

    def consume(self, request_id: str, call_hash_: str) -> bool:
        """Atomically mark an approval used for this exact call; False if it is not (or no longer) usable."""
        now = time.time()
        with self._tx() as db, self._atomic(db):  # used only once it is on record
            cur = db.execute("UPDATE approvals SET status='used', used_at=? WHERE id=? AND call_hash=? "
                             "AND status='approved' AND (use_by IS NULL OR use_by>=?)",
                             (now, request_id, call_hash_, now))
            if cur.rowcount == 1:
                self._audit("approval_used", request_id, "registry")
        return cur.rowcount == 1

    @staticmethod
    def _audit(kind: str, request_id: str, actor: str, **extra: object) -> None:
        from autooptimizer.policies.audit import AuditLog

        AuditLog().append({"kind": kind, "approval_id": request_id, "actor": actor, **extra})
