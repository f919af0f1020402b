"""The NDCG gate's anchor: the online NDCG@10 the current champion reached on healthy traffic, kept as loop state in
AUTOOPT_HOME/loop/ndcg_anchor.json (one JSON object, `gates.NdcgAnchor`, replaced atomically).

Why: the gate's sliding baseline forgets a drop W + baseline seconds after it (docs/benchmarks.md, Soak); the
anchor does not, so a shortfall the first cycle could not repair keeps the gate firing (gates.py, NDCG baselines).

Who writes it: only the scheduler (`Scheduler.observe` -> `AnchorStore.observe`), from its own gate readings, and
an operator's `autoopt gates anchor --reset` (audited). Every other reader (`autoopt gates`, the metrics tool of a
cycle, the API, the console) reads it and compares with it, and never sets it. The rule:
- no file: the first healthy reading sets it (the baseline window's mean: the level before any drop);
- the champion alias moved (a promotion, a rollback, an operator): a re-anchor becomes pending, and the first
  healthy reading once the current and baseline windows both lie after the move sets it for the new champion;
- reset: a re-anchor is pending from now on: the next healthy reading sets it;
- a corrupt file is reported (the error names the file and the fix) and read as no anchor, but never overwritten
  by the loop: an operator deletes it or resets.
A healthy reading: ndcg_drop read `ok` (enough feedback in both windows, no sliding drop), no cycle running (no
canary or A/B splits the traffic), a finite baseline mean and a known sample count.

The anchor is a conservative level, not the window's mean: `mean - Z * sqrt(mean * (1 - mean) / n)`, the lower
confidence bound of the mean of n per-request NDCG@10 values in [0, 1] with the largest variance such values can have
(Bhatia-Davis: var <= (1 - mean) * mean). A mean from one baseline window is noisy (per-request NDCG@10 varies
from 0 to 1: at n = 200 its standard error is up to 0.03), and a fixed reference set on a lucky window reads every
later window as a drop: in the third month soak the anchor was set at 0.740 from 209 samples on SciFact traffic
whose long-run mean is 0.725, and the gate confirmed a 4 % "drop" and retrained within two simulated days. The
bound keeps the anchor below what the champion plausibly delivers; a shift to a weak domain (0.40 against 0.72)
still fires at once, and sudden drops of a few percent are the sliding comparison's job.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from pydantic import ValidationError

from autooptimizer.errors import ConfigError
from autooptimizer.gates import AnchorRead, GateReport, NdcgAnchor
from autooptimizer.settings import Settings

log = logging.getLogger(__name__)
ANCHOR_FILE = ("loop", "ndcg_anchor.json")
Z = 2.0
"""One-sided z of the anchor's lower bound (~97.7 %); see the module docstring."""


def conservative_level(mean: float, samples: int) -> float:
    """The anchor for a baseline mean of `samples` per-request NDCG@10 values (module docstring); >= 0."""
    return max(0.0, mean - Z * math.sqrt(max(0.0, mean * (1.0 - mean)) / samples))


def current_champion() -> str | None:
    """The `champion` alias (AUTOOPT_HOME/models/aliases.json)."""
    from autooptimizer.search import aliases

    return aliases.get_alias(aliases.CHAMPION)


class AnchorStore:
    """Read, set and reset the anchor file. `champion` says which version is the champion now (the alias, unless a
    caller gives another source); `settle_seconds` is how long after a champion change the windows still hold the
    old champion's traffic (the gate's W + baseline)."""

    def __init__(self, path: Path, *, champion: Callable[[], str | None] = current_champion,
                 settle_seconds: float = 0.0) -> None:
        self.path = path
        self.champion = champion
        self.settle_seconds = settle_seconds
        self._lock = threading.Lock()

    @classmethod
    def for_settings(cls, settings: Settings, settle_seconds: float = 0.0) -> AnchorStore:
        return cls(settings.path(*ANCHOR_FILE), settle_seconds=settle_seconds)

    # -- reading --------------------------------------------------------------------------------------------------
    def load(self) -> tuple[NdcgAnchor | None, str | None]:
        """(the anchor, None), (None, None) when there is no file, or (None, the error naming the file and fix)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None, None
        except OSError as exc:
            return None, self._broken(f"cannot be read ({exc})")
        try:  # bytes that are not UTF-8 raise UnicodeDecodeError, a ValueError: corrupt like bad JSON
            return NdcgAnchor.model_validate(json.loads(raw.decode("utf-8"))), None
        except (ValueError, ValidationError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return None, self._broken(f"is corrupt ({first})")

    def _broken(self, what: str) -> str:
        return (f"The NDCG anchor file {self.path} {what}; it is read as no anchor. Delete it (or run "
                "`autoopt gates anchor --reset`) to re-anchor at the next healthy reading.")

    def current(self) -> tuple[str | None, ConfigError | None]:
        """(the current champion, None), or (None, why it cannot be read): a broken aliases.json must not fail the
        gate reading the anchor is only an addition to (every gate would read as failed, none could fire)."""
        try:
            champion = cast("object", self.champion())  # aliases.json is hand-editable: any JSON value
        except (OSError, ValueError, AttributeError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return None, self._no_champion(f"cannot be read ({first})")
        if champion is not None and not (isinstance(champion, str) and champion):
            return None, self._no_champion(f"is {champion!r}, not a version name")
        return champion, None

    @staticmethod
    def _no_champion(what: str) -> ConfigError:
        from autooptimizer.search.aliases import aliases_path

        return ConfigError(f"The `champion` alias {what}; the NDCG anchor cannot be compared or set.",
                           f"Correct {aliases_path()} (a JSON object of alias -> version name) or restore it.")

    def read(self) -> AnchorRead:
        """The anchor as the gate sees it for the current champion."""
        anchor, error = self.load()
        champion, broken = self.current()
        path = str(self.path)
        if broken is not None:
            return AnchorRead(state="corrupt", path=path, anchor=anchor, error=f"{broken.problem} {broken.fix}")
        if error is not None:
            return AnchorRead(state="corrupt", path=path, champion=champion, error=error)
        if champion is None:
            return AnchorRead(state="no_champion", path=path, anchor=anchor)
        if anchor is None:
            return AnchorRead(state="missing", path=path, champion=champion)
        if anchor.champion != champion:
            return AnchorRead(state="other_champion", path=path, champion=champion, anchor=anchor)
        state = "set" if anchor.ndcg10 is not None else "pending"
        return AnchorRead(state=state, path=path, champion=champion, anchor=anchor)

    # -- writing --------------------------------------------------------------------------------------------------
    def save(self, anchor: NdcgAnchor) -> NdcgAnchor:
        """Replace the file atomically (temp file + os.replace)."""
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".tmp{os.getpid()}.{threading.get_ident()}")
            tmp.write_text(anchor.model_dump_json(indent=1), encoding="utf-8")
            os.replace(tmp, self.path)
        return anchor

    def reset(self, by: str, reason: str = "", now: float | None = None) -> NdcgAnchor:
        """An operator accepts the level traffic is served at now: re-anchor at the next healthy reading. Recorded in
        the audit log first (as the kill switch's OFF is), so an unrecorded reset cannot happen. Raises NotFoundError
        when there is no champion to anchor."""
        from autooptimizer.errors import NotFoundError
        from autooptimizer.policies.audit import AuditLog

        champion, broken = self.current()
        if broken is not None:
            raise broken
        if champion is None:
            raise NotFoundError("There is no `champion` alias to anchor the NDCG gate for.",
                                "Run `autoopt bootstrap` to create the first champion.")
        before, error = self.load()
        now = time.time() if now is None else now
        AuditLog().append({"kind": "ndcg_anchor_reset", "actor": by, "reason": reason, "champion": champion,
                           "previous": before.model_dump() if before else None, "previous_error": error})
        how = f"reset by {by}" + (f": {reason}" if reason else "")
        return self.save(NdcgAnchor(champion=champion, set_at=now, how=how, not_before=now))

    def observe(self, report: GateReport, *, busy: bool, now: float | None = None) -> NdcgAnchor | None:
        """After one of the scheduler's readings: start a re-anchor when the champion moved, set the anchor when a
        healthy reading is due. Returns what it wrote, or None. A corrupt file is only logged (see the module)."""
        ev = report.gate("ndcg_drop").evidence.anchor
        now = time.time() if now is None else now
        if ev is None or ev.champion is None:
            return None
        if ev.state == "corrupt":
            log.warning("%s", ev.note)
            return None
        if ev.state == "other_champion":
            old = self.load()[0]
            was = f" (anchor {old.ndcg10:.4f})" if old and old.ndcg10 else ""
            return self.save(NdcgAnchor(champion=ev.champion, set_at=now, not_before=now + self.settle_seconds,
                                        how=f"champion changed from {old.champion if old else '?'}{was}"))
        gate = report.gate("ndcg_drop")
        level = ev.baseline_ndcg10
        if busy or gate.status != "ok" or level is None or not 0 < level <= 1 or ev.state not in ("missing", "pending"):
            return None
        samples = gate.evidence.samples.get("baseline")
        if samples is None or samples < 1:
            return None  # no count, no bound: wait for a reading that has one
        anchor = conservative_level(level, int(samples))
        if anchor <= 0:
            return None
        pending = self.load()[0] if ev.state == "pending" else None
        why = f"after {pending.how}" if pending else "no anchor"
        return self.save(NdcgAnchor(champion=ev.champion, ndcg10=round(anchor, 6), mean=round(level, 6), set_at=now,
                                    samples=int(samples),
                                    how=f"first healthy reading of champion {ev.champion} ({why})"))

    def describe(self) -> dict[str, Any]:
        """What `autoopt gates anchor` prints: the read state, the file's content and the note."""
        read = self.read()
        return {"state": read.state, "path": read.path, "champion": read.champion,
                "anchor": read.anchor.model_dump() if read.anchor else None, "error": read.error,
                "note": read.note()}
