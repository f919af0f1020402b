"""The operator kill switch: a file under AUTOOPT_HOME, read on every tool call.

While it is on, the PDP denies every change and critical tool (policy `shared.kill-switch`), so a running cycle
stops at its next tool call; read tools still work so operators can look around. An unreadable switch file
counts as ON: a damaged safety control must fail closed.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from filelock import FileLock
from pydantic import BaseModel


class KillSwitchState(BaseModel):
    on: bool
    by: str | None = None
    reason: str | None = None
    at: float | None = None
    path: str


class KillSwitch:
    """`is_on()` / `set(on, by, reason)` / `state()`. With no path it follows the current AUTOOPT_HOME."""

    def __init__(self, path: Path | None = None) -> None:
        self._path = path

    @property
    def path(self) -> Path:
        if self._path is not None:
            return self._path
        from autooptimizer.settings import get_settings

        return get_settings().path("kill_switch.json")

    def state(self) -> KillSwitchState:
        path = self.path
        try:
            raw = path.read_text()
        except FileNotFoundError:
            return KillSwitchState(on=False, path=str(path))
        except OSError as exc:
            return KillSwitchState(on=True, reason=f"switch file unreadable ({exc}); treated as on", path=str(path))
        try:
            data = json.loads(raw)
            on = data["on"]
            if not isinstance(on, bool):
                raise ValueError("'on' is not a boolean")
            return KillSwitchState(on=on, by=data.get("by"), reason=data.get("reason"), at=data.get("at"),
                                   path=str(path))
        except (ValueError, KeyError, TypeError) as exc:
            return KillSwitchState(on=True, reason=f"switch file corrupt ({exc}); treated as on", path=str(path))

    def is_on(self) -> bool:
        return self.state().on

    def set(self, on: bool, by: str = "operator", reason: str = "") -> KillSwitchState:
        """Flip the switch (atomic replace) and record the change in the audit trail.

        Flips are serialised (a `filelock.FileLock` on `kill_switch.lock`: threads and processes), so concurrent
        flips neither share a temp file (one API worker's replace used to fail with FileNotFoundError: a 500) nor
        interleave: the switch's final state is the one the last audited flip set.
        Order is fail-safe when the audit log refuses the write (AuditError): turning the switch ON happens first
        (the safety action never waits for the log), then is recorded; turning it OFF is recorded first, so an
        unrecorded OFF cannot happen - with a broken log the switch stays on.
        """
        from autooptimizer.policies.audit import AuditLog

        path = self.path
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {"kind": "kill_switch", "actor": by, "on": bool(on), "reason": reason}
        with FileLock(path.with_suffix(".lock")):
            if not on:
                AuditLog().append(record)
            payload = {"on": bool(on), "by": by, "reason": reason, "at": time.time()}
            tmp = path.with_suffix(f".tmp{os.getpid()}.{threading.get_ident()}")
            tmp.write_text(json.dumps(payload))
            os.replace(tmp, path)
            if on:
                AuditLog().append(record)
            return self.state()


kill_switch = KillSwitch()
