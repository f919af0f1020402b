"""One cycle: its journaled steps as a timeline, each with the registry decisions made inside it (agent, tool, PDP
decision, policy ids, reason: the audit log's `decision` records carrying this cycle id), its duration and result;
then its artifacts and evidence. Same sources as `autoopt loop show ID`, `autoopt audit` and the artifacts folder.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from autooptimizer.console.views.evidence import (
    ABView,
    DiagnosticView,
    EvaluationView,
    read_ab,
    read_diagnostic,
    read_evaluation,
)
from autooptimizer.console.views.gitops import CommitView, cycle_commits
from autooptimizer.loop.journal import CycleRecord, Journal
from autooptimizer.settings import Settings


class Decision(BaseModel):
    """One registry decision as the audit log recorded it."""

    seq: int
    ts: float
    agent: str
    tool: str
    decision: str
    policies: list[str] = Field(default_factory=list)
    reason: str | None = None
    executed: bool = False
    error: str | None = None
    approval_id: str | None = None
    args: Any = None


class StepView(BaseModel):
    seq: int
    name: str
    status: str
    started_at: float
    finished_at: float | None
    seconds: float | None
    data: dict[str, Any]
    decisions: list[Decision] = Field(default_factory=list)


class ArtifactFile(BaseModel):
    name: str
    size: int


class CycleView(BaseModel):
    record: CycleRecord
    steps: list[StepView]
    unplaced: list[Decision] = Field(default_factory=list, description="decisions outside every step's span")
    artifacts: list[ArtifactFile] = Field(default_factory=list)
    diagnostic: DiagnosticView | None = None
    evaluation: EvaluationView | None = None
    ab: ABView | None = None
    commits: list[CommitView] = Field(default_factory=list)
    gitops_error: str | None = None
    watch: dict[str, Any] | None = None
    rollback: dict[str, Any] | None = None
    details: dict[str, Any] = Field(default_factory=dict)


def cycle_decisions(cycle_id: str) -> list[Decision]:
    """The audit log's decision records of one cycle, in order."""
    from autooptimizer.console.views.audit import audit_records

    out: list[Decision] = []
    for rec in audit_records()[0]:  # up to an unreadable line (the audit page names it)
        if rec.get("kind") == "decision" and rec.get("cycle_id") == cycle_id:
            out.append(Decision(seq=int(rec.get("seq", 0)), ts=float(rec.get("ts", 0.0)),
                                agent=str(rec.get("agent")), tool=str(rec.get("tool")),
                                decision=str(rec.get("decision")), policies=list(rec.get("policies") or []),
                                reason=rec.get("reason"), executed=bool(rec.get("executed")),
                                error=rec.get("error"), approval_id=rec.get("approval_id"), args=rec.get("args")))
    return out


def place(steps: list[StepView], decisions: list[Decision]) -> list[Decision]:
    """Put each decision into the step whose span holds its time (steps of a cycle do not overlap); returns those
    that fall outside every step."""
    unplaced = []
    for d in decisions:
        home = [s for s in steps if s.started_at <= d.ts <= (s.finished_at or time.time())]
        if home:
            home[-1].decisions.append(d)
        else:
            unplaced.append(d)
    return unplaced


def artifact_files(folder: Path) -> list[ArtifactFile]:
    if not folder.is_dir():
        return []
    return [ArtifactFile(name=p.name, size=p.stat().st_size) for p in sorted(folder.iterdir()) if p.is_file()]


def artifact_path(settings: Settings, cycle_id: str, name: str) -> Path | None:
    """The file `name` among the cycle's artifacts (a plain file directly in its folder), or None. The name is
    matched against the folder's listing, so no path can reach outside it."""
    rec = Journal(settings).get(cycle_id, with_steps=False)
    folder = Path(rec.artifacts_dir or settings.home / "artifacts" / cycle_id)
    return next((folder / f.name for f in artifact_files(folder) if f.name == name), None)


def read_cycle(settings: Settings, cycle_id: str) -> CycleView:
    """Everything the cycle page shows (NotFoundError for an unknown id, as `autoopt loop show`)."""
    rec = Journal(settings).get(cycle_id)
    now = time.time()
    steps = [StepView(seq=s.seq, name=s.name, status=s.status, started_at=s.started_at, finished_at=s.finished_at,
                      seconds=round((s.finished_at or now) - s.started_at, 3), data=s.data) for s in rec.steps]
    unplaced = place(steps, cycle_decisions(cycle_id))
    folder = Path(rec.artifacts_dir or settings.home / "artifacts" / cycle_id)
    commits, git_error = cycle_commits(settings, cycle_id)
    details = rec.summary or {}
    return CycleView(record=rec, steps=steps, unplaced=unplaced, artifacts=artifact_files(folder),
                     diagnostic=read_diagnostic(folder), evaluation=read_evaluation(folder),
                     ab=read_ab(folder, settings.feedback_log), commits=commits, gitops_error=git_error,
                     watch=details.get("watch"), rollback=details.get("rollback"), details=details)
