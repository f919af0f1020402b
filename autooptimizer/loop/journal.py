"""The cycle journal (SQLite under AUTOOPT_HOME) and the one-cycle-at-a-time lock.

Every step is written `started` before it acts and `done`/`failed` after, with its data. Before a cycle first
touches the deployment it records the safe point (the patch and git revision that served before it), so a crash at
any moment can be undone: `recover()` in loop/cycle.py restores the safe point and marks the cycle `aborted`.

The lock is an `flock` on `loop/cycle.lock`: the kernel drops it when the holder dies, so a lock that can be taken
while the journal says `running` proves that cycle's process is gone.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
import time
from collections.abc import Generator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from autooptimizer.errors import NotFoundError
from autooptimizer.settings import Settings

CycleStatus = Literal["running", "finished", "failed", "aborted"]
StepStatus = Literal["started", "done", "failed", "compensated", "skipped"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cycles (
  id TEXT PRIMARY KEY, day TEXT NOT NULL, seq INTEGER NOT NULL, status TEXT NOT NULL, outcome TEXT,
  trigger TEXT, gate TEXT, env TEXT, started_at REAL NOT NULL, finished_at REAL, artifacts_dir TEXT,
  trace_id TEXT, pid INTEGER, error TEXT, summary TEXT, safe_patch TEXT, safe_sha TEXT,
  deploy_dirty INTEGER NOT NULL DEFAULT 0, UNIQUE(day, seq));
CREATE TABLE IF NOT EXISTS steps (
  cycle_id TEXT NOT NULL REFERENCES cycles(id), seq INTEGER NOT NULL, name TEXT NOT NULL, status TEXT NOT NULL,
  started_at REAL NOT NULL, finished_at REAL, data TEXT, PRIMARY KEY (cycle_id, seq));
"""


class StepRecord(BaseModel):
    cycle_id: str
    seq: int
    name: str
    status: StepStatus
    started_at: float
    finished_at: float | None = None
    data: dict[str, Any] = Field(default_factory=dict[str, Any])


class CycleRecord(BaseModel):
    id: str
    status: CycleStatus
    outcome: str | None = None
    trigger: str | None = None
    gate: str | None = None
    env: str | None = None
    started_at: float
    finished_at: float | None = None
    artifacts_dir: str | None = None
    trace_id: str | None = None
    pid: int | None = None
    error: str | None = None
    summary: dict[str, Any] = Field(default_factory=dict[str, Any])
    safe_patch: dict[str, Any] | None = None
    safe_sha: str | None = None
    deploy_dirty: bool = False
    steps: list[StepRecord] = Field(default_factory=list[StepRecord])

    @property
    def duration_seconds(self) -> float | None:
        return None if self.finished_at is None else round(self.finished_at - self.started_at, 3)


class Journal:
    """Thread-safe: one short-lived connection per call; writes are serialised by SQLite."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.path = settings.path("loop", "journal.db")
        with self._conn() as db:
            db.executescript(_SCHEMA)

    @contextmanager
    def _conn(self) -> Generator[sqlite3.Connection, None, None]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            yield db
        finally:
            db.close()

    # -- cycles ---------------------------------------------------------------------------------------------------
    def new_cycle(self, *, trigger: str, env: str, gate: str | None = None, trace_id: str | None = None) -> CycleRecord:
        """Allocate `si_YYYY_MM_DD_NNN` (NNN counts per day) and its artifacts directory."""
        now = time.time()
        day = datetime.fromtimestamp(now).strftime("%Y_%m_%d")
        with self._conn() as db:
            db.execute("BEGIN IMMEDIATE")
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM cycles WHERE day = ?", (day,)).fetchone()[0]
            cid = f"si_{day}_{seq:03d}"
            art = self.settings.home / "artifacts" / cid
            art.mkdir(parents=True, exist_ok=True)
            db.execute(
                "INSERT INTO cycles (id, day, seq, status, trigger, gate, env, started_at, artifacts_dir, trace_id,"
                " pid) VALUES (?, ?, ?, 'running', ?, ?, ?, ?, ?, ?, ?)",
                (cid, day, seq, trigger, gate, env, now, str(art), trace_id, os.getpid()),
            )
            db.execute("COMMIT")
        return self.get(cid)

    def update(self, cycle_id: str, **fields: Any) -> None:
        allowed = {"gate", "trace_id", "outcome", "summary", "error"}
        bad = set(fields) - allowed
        if bad:
            raise ValueError(f"cannot update {bad}")
        sets = ", ".join(f"{k} = ?" for k in fields)
        vals = [json.dumps(v) if k == "summary" else v for k, v in fields.items()]
        with self._conn() as db:
            db.execute(f"UPDATE cycles SET {sets} WHERE id = ?", (*vals, cycle_id))

    def mark_dirty(self, cycle_id: str, safe_patch: dict[str, Any] | None, safe_sha: str | None) -> None:
        """Record the safe point once, before the cycle's first deployment change (later calls keep the first)."""
        with self._conn() as db:
            db.execute(
                "UPDATE cycles SET safe_patch = COALESCE(safe_patch, ?), safe_sha = COALESCE(safe_sha, ?),"
                " deploy_dirty = 1 WHERE id = ?",
                (json.dumps(safe_patch) if safe_patch is not None else None, safe_sha, cycle_id),
            )

    def mark_clean(self, cycle_id: str) -> None:
        """The cycle's deployment changes are final (promoted and watched, or restored)."""
        with self._conn() as db:
            db.execute("UPDATE cycles SET deploy_dirty = 0 WHERE id = ?", (cycle_id,))

    def finish(self, cycle_id: str, status: CycleStatus, outcome: str, *, summary: dict[str, Any] | None = None,
               error: str | None = None) -> CycleRecord:
        with self._conn() as db:
            db.execute(
                "UPDATE cycles SET status = ?, outcome = ?, finished_at = ?, summary = COALESCE(?, summary),"
                " error = COALESCE(?, error) WHERE id = ?",
                (status, outcome, time.time(), json.dumps(summary) if summary is not None else None, error, cycle_id),
            )
        return self.get(cycle_id)

    def get(self, cycle_id: str, *, with_steps: bool = True) -> CycleRecord:
        with self._conn() as db:
            row = db.execute("SELECT * FROM cycles WHERE id = ?", (cycle_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"Cycle {cycle_id!r} not found.", "List cycles with `autoopt history`.")
            steps = db.execute("SELECT * FROM steps WHERE cycle_id = ? ORDER BY seq", (cycle_id,)).fetchall()
        rec = _cycle(row)
        if with_steps:
            rec.steps = [_step(s) for s in steps]
        return rec

    def find(self, cycle_id: str) -> CycleRecord | None:
        """The cycle without its steps, or None when this journal never ran it (e.g. another home's cycle)."""
        try:
            return self.get(cycle_id, with_steps=False)
        except NotFoundError:
            return None

    def list(self, limit: int = 20) -> list[CycleRecord]:
        with self._conn() as db:
            rows = db.execute("SELECT * FROM cycles ORDER BY started_at DESC, seq DESC LIMIT ?", (limit,)).fetchall()
        return [_cycle(r) for r in rows]

    def running(self) -> list[CycleRecord]:
        with self._conn() as db:
            rows = db.execute("SELECT id FROM cycles WHERE status = 'running' ORDER BY started_at").fetchall()
        return [self.get(r["id"]) for r in rows]

    def dirty(self) -> list[CycleRecord]:
        """Cycles that ended with deployment changes still to undo (their restore failed)."""
        with self._conn() as db:
            rows = db.execute("SELECT id FROM cycles WHERE status != 'running' AND deploy_dirty = 1 "
                              "ORDER BY started_at").fetchall()
        return [self.get(r[0], with_steps=False) for r in rows]

    def last_finished(self) -> CycleRecord | None:
        with self._conn() as db:
            row = db.execute("SELECT * FROM cycles WHERE status != 'running' ORDER BY finished_at DESC LIMIT 1"
                             ).fetchone()
        return _cycle(row) if row else None

    # -- steps ----------------------------------------------------------------------------------------------------
    def step_start(self, cycle_id: str, name: str, data: dict[str, Any] | None = None) -> int:
        with self._conn() as db:
            db.execute("BEGIN IMMEDIATE")
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM steps WHERE cycle_id = ?", (cycle_id,)
                             ).fetchone()[0]
            db.execute("INSERT INTO steps (cycle_id, seq, name, status, started_at, data) VALUES (?, ?, ?, 'started',"
                       " ?, ?)", (cycle_id, seq, name, time.time(), json.dumps(data or {}, default=str)))
            db.execute("COMMIT")
        return seq

    def step_end(self, cycle_id: str, seq: int, status: StepStatus, data: dict[str, Any] | None = None) -> None:
        with self._conn() as db:
            db.execute(
                "UPDATE steps SET status = ?, finished_at = ?, data = COALESCE(?, data) WHERE cycle_id = ? AND seq = ?",
                (status, time.time(), json.dumps(data, default=str) if data is not None else None, cycle_id, seq),
            )


def _cycle(row: sqlite3.Row) -> CycleRecord:
    d = dict(row)
    d.pop("day", None)
    d.pop("seq", None)
    d["summary"] = json.loads(d["summary"]) if d.get("summary") else {}
    d["safe_patch"] = json.loads(d["safe_patch"]) if d.get("safe_patch") else None
    d["deploy_dirty"] = bool(d["deploy_dirty"])
    return CycleRecord.model_validate(d)


def _step(row: sqlite3.Row) -> StepRecord:
    d = dict(row)
    d["data"] = json.loads(d["data"]) if d.get("data") else {}
    return StepRecord.model_validate(d)


class CycleLock:
    """Only one cycle at a time, across threads and processes. Non-blocking: `acquire()` says whether it got it."""

    _thread_lock = threading.Lock()

    def __init__(self, settings: Settings) -> None:
        self.path: Path = settings.path("loop", "cycle.lock")
        self._fd: int | None = None

    def acquire(self) -> bool:
        with CycleLock._thread_lock:
            if self._fd is not None:
                return False
            fd = self._try_flock()
            if fd is None:
                return False
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            self._fd = fd
            return True

    def release(self) -> None:
        with CycleLock._thread_lock:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                os.close(self._fd)
                self._fd = None

    def held_elsewhere(self) -> bool:
        """True when another holder (thread or process) has the lock right now.

        The probe takes the flock for an instant on its own descriptor, inside the process-wide thread lock, so no
        `acquire()` in this process can see it: a status read used to make a concurrent trigger answer 409 with no
        cycle running. (Another process's `acquire()` can still meet the probe; it then reports busy, never two.)"""
        with CycleLock._thread_lock:
            if self._fd is not None:
                return False
            fd = self._try_flock()
            if fd is None:
                return True
            os.close(fd)  # closing drops the probe's flock
            return False

    def _try_flock(self) -> int | None:
        """A descriptor holding the exclusive flock, or None when someone else holds it (never waits)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd
