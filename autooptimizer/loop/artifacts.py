"""A cycle's artifacts in AUTOOPT_HOME/artifacts/<cycle id>/: summary.json and helm_patch.yaml. The journal is the
record of truth; an artifact that cannot be written is logged, never an error of the cycle."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autooptimizer.loop.journal import CycleRecord

if TYPE_CHECKING:
    from autooptimizer.loop.cycle_types import ReleasePort

log = logging.getLogger(__name__)


def jsonable(value: Any) -> Any:
    """`value` as plain JSON types (anything else as its str)."""
    return json.loads(json.dumps(value, default=str))


def write_json(path: Path, data: Any) -> None:
    """Write an artifact. A full or broken artifacts disk is logged, and never turns a finished cycle into an
    exception out of `run()`."""
    if not str(path.parent) or str(path.parent) == ".":
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(jsonable(data), indent=2))
    except OSError as exc:
        log.error("could not write the artifact %s: %s", path, exc)


def write_helm_patch(art: Path, release: ReleasePort) -> None:
    """The desired state git holds now, as helm_patch.yaml."""
    patch = release.git.read_patch()
    if patch is not None:
        art.mkdir(parents=True, exist_ok=True)
        (art / "helm_patch.yaml").write_text(patch.to_yaml(header=f"GitOps revision {release.git.head()}"))


def summary_doc(rec: CycleRecord) -> dict[str, Any]:
    """summary.json: the cycle's record, its artifacts and steps, and the state it ended with under `details`."""
    art = Path(rec.artifacts_dir or ".")
    files = sorted(p.name for p in art.iterdir()) if art.is_dir() else []
    return {"id": rec.id, "status": rec.status, "outcome": rec.outcome, "trigger": rec.trigger, "gate": rec.gate,
            "env": rec.env, "started_at": rec.started_at, "finished_at": rec.finished_at,
            "duration_seconds": rec.duration_seconds, "trace_id": rec.trace_id, "artifacts_dir": rec.artifacts_dir,
            "artifacts": files, "steps": [s.model_dump() for s in rec.steps], "details": rec.summary}


def write_summary(rec: CycleRecord) -> None:
    write_json(Path(rec.artifacts_dir or "") / "summary.json", summary_doc(rec))
