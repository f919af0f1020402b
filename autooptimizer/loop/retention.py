"""Retention: what `prune_storage` may delete under AUTOOPT_HOME so growth levels off, and what it never may.

The profile's `retention` section sets counts (and optionally an age); `plan()` lists, per kind, the items beyond
the count (or older than `maxAgeDays`) that are not protected, oldest first:

| kind              | where                               | never deleted                                         |
|-------------------|-------------------------------------|-------------------------------------------------------|
| `model_version`   | models/<version> + its MLflow entry | gold, champion, serving, canary, a running cycle's     |
|                   |                                     | safe point, the last `loop.rollbackDepth` deploys      |
|                   |                                     | (tools/protection.py), any alias holder, a version an  |
|                   |                                     | approval names, what a kept version needs to serve     |
|                   |                                     | (an ltr_fusion's fallback)                             |
| `dataset`         | datasets/<hash>                     | the newest `datasets`                                  |
| `mlflow_run`      | MLflow runs of the experiment       | runs of kept model versions                            |
| `cycle_artifacts` | artifacts/<cycle id>                | running cycles, cycles an approval names               |
| `trace`           | traces/<trace id>.jsonl             | the newest `traces`                                    |
| `feedback_log`    | feedback/feedback.jsonl             | its records of the last `feedbackLogDays` (by `ts`)    |
|                   |                                     | within its newest `feedbackLogMB`; older ones are cut  |

Every protected set is read from stored state; a source that cannot be read raises, and the registry denies the
call (`registry.facts-error`): nothing is deleted on a guess. `prune_storage` (tools/storage.py) computes the plan
for its PDP facts (`target_checked`, `prune_touches_protected`) and again when it runs, and skips anything that
became protected in between. The audit log is never pruned (it rotates into segments instead: policies/audit.py).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal, cast

from pydantic import BaseModel, Field

from autooptimizer.profiles import Profile, Retention
from autooptimizer.settings import Settings

Kind = Literal["model_version", "dataset", "mlflow_run", "cycle_artifacts", "trace", "feedback_log"]
DAY_S = 86400.0


class PruneItem(BaseModel):
    kind: Kind
    name: str
    age_days: float | None = None
    reason: str


class PrunePlan(BaseModel):
    delete: list[PruneItem] = Field(default_factory=lambda: list[PruneItem]())
    kept: dict[str, int] = Field(default_factory=dict)
    protected: dict[str, list[str]] = Field(default_factory=dict)
    feedback_cut_bytes: int | None = Field(default=None, description="bytes the feedback log's oldest records took "
                                           "when planned; what was appended since is kept")
    feedback_limit_bytes: int | None = Field(default=None, description="the log's size cap (feedbackLogMB)")
    feedback_cutoff: float | None = Field(default=None, description="unix time: records before it are cut "
                                          "(now - feedbackLogDays; None: size only)")

    def touches_protected(self) -> bool:
        return any(item.name in self.protected.get(item.kind, []) for item in self.delete)


def _select(kind: Kind, items: list[tuple[str, float]], keep: int, max_age_days: float | None,
            protected: set[str], now: float) -> tuple[list[PruneItem], int]:
    """Items (name, created epoch seconds) beyond the newest `keep` unprotected ones, or older than the age limit;
    never a protected one. Returns (to delete, oldest first; how many are kept)."""
    newest = sorted(items, key=lambda x: (x[1], x[0]), reverse=True)
    out: list[PruneItem] = []
    rank = 0
    for name, created in newest:
        if name in protected:
            continue
        age = max(0.0, (now - created) / DAY_S)
        rank += 1
        if rank > keep:
            out.append(PruneItem(kind=kind, name=name, age_days=round(age, 3), reason=f"beyond the newest {keep}"))
        elif max_age_days is not None and age > max_age_days:
            out.append(PruneItem(kind=kind, name=name, age_days=round(age, 3),
                                 reason=f"older than {max_age_days} days"))
    return list(reversed(out)), len(items) - len(out)


def _epoch(iso: str | None, fallback: float) -> float:
    from datetime import datetime

    try:
        return datetime.fromisoformat(iso).timestamp() if iso else fallback
    except ValueError:
        return fallback


# -- protected sets ---------------------------------------------------------------------------------------------------
def protected_versions(settings: Settings, rollback_depth: int) -> set[str]:
    """Every role of tools/protection.py, any alias holder, versions approvals name, and their runtime needs."""
    from autooptimizer.policies.approvals import ApprovalStore
    from autooptimizer.search import aliases, model_store
    from autooptimizer.tools.protection import desired_states, rollback_window_versions, safe_point_versions

    out = set(aliases.all_aliases().values())
    for patch in desired_states(settings).values():
        if patch is not None:
            out |= {patch.model_version} | ({patch.canary_version} if patch.canary_version else set())
    out |= safe_point_versions(settings) | rollback_window_versions(settings, rollback_depth)
    store = ApprovalStore()
    for status in ("pending", "approved"):
        out |= {str(r.args["model_version"]) for r in store.list(status=status) if "model_version" in r.args}
    todo = [v for v in out if model_store.exists(v)]
    while todo:  # what a kept version needs to serve: its fallback, transitively
        for dep in model_store.runtime_dependencies(model_store.load(todo.pop())):
            if dep not in out:
                out.add(dep)
                todo.append(dep)
    return out


def protected_cycles(settings: Settings) -> set[str]:
    from autooptimizer.loop.journal import Journal
    from autooptimizer.policies.approvals import ApprovalStore

    store = ApprovalStore()
    named = {r.cycle_id for s in ("pending", "approved") for r in store.list(status=s) if r.cycle_id}
    return {r.id for r in Journal(settings).running()} | named


# -- the plan ---------------------------------------------------------------------------------------------------------
def plan(settings: Settings, profile: Profile, now: float | None = None) -> PrunePlan:
    """What the profile's retention policy deletes now (raises when a protected set cannot be read)."""
    from autooptimizer.search import model_store

    r: Retention = profile.retention
    now = time.time() if now is None else now
    out = PrunePlan()
    keep_versions = protected_versions(settings, profile.loop.rollback_depth)
    versions = [(v, _epoch(model_store.load(v).created_at, now)) for v in model_store.list_versions()]
    groups: list[tuple[Kind, list[tuple[str, float]], int, set[str]]] = [
        ("model_version", versions, r.model_versions, keep_versions),
        ("dataset", _dirs(settings.home / "datasets"), r.datasets, set()),
        ("cycle_artifacts", _dirs(settings.home / "artifacts"), r.cycle_artifacts, protected_cycles(settings)),
        ("trace", _files(settings.home / "traces", "*.jsonl"), r.traces, set()),
    ]
    for kind, items, keep, protected in groups:
        chosen, kept = _select(kind, items, keep, r.max_age_days, protected, now)
        out.delete += chosen
        out.kept[kind] = kept
        out.protected[kind] = sorted(protected & {name for name, _ in items})
    doomed = {i.name for i in out.delete if i.kind == "model_version"}
    runs, keep_runs = _mlflow_runs(settings, {v for v, _ in versions} - doomed)
    chosen, kept = _select("mlflow_run", runs, r.mlflow_runs, r.max_age_days, keep_runs, now)
    out.delete += chosen
    out.kept["mlflow_run"], out.protected["mlflow_run"] = kept, sorted(keep_runs)
    feedback = feedback_cut(settings.feedback_log, r, now)
    if feedback is not None:
        out.feedback_cut_bytes, why = feedback
        out.feedback_limit_bytes = int(r.feedback_log_mb * (1 << 20))
        if r.feedback_log_days is not None:
            out.feedback_cutoff = now - r.feedback_log_days * DAY_S
        out.delete.append(PruneItem(kind="feedback_log", name=settings.feedback_log.name, reason=why))
    return out


def feedback_cut(log: Path, r: Retention, now: float) -> tuple[int, str] | None:
    """(bytes to cut from the start, why) when the feedback log holds records beyond `feedbackLogMB` or older
    than `feedbackLogDays` (the larger cut wins); None when it does not (or does not exist)."""
    if not log.is_file():
        return None
    size = log.stat().st_size
    cuts: list[tuple[int, str]] = []
    limit = int(r.feedback_log_mb * (1 << 20))
    if size > limit:
        cuts.append((size - limit, f"records before its newest {r.feedback_log_mb:g} MB"))
    if r.feedback_log_days is not None:
        start = first_record_since(log, now - r.feedback_log_days * DAY_S)
        if start > 0:
            cuts.append((start, f"records older than {r.feedback_log_days:g} days"))
    return max(cuts) if cuts else None


def first_record_since(log: Path, cutoff: float) -> int:
    """Byte offset of the first line that is not a record older than `cutoff` epoch seconds (its time read as the
    A/B judge reads it, loop/signals.record_time); the file's size when every line is older. A scan from the start
    that stops at the first such line, so it reads only the lines a trim cuts (plus one), and a line without a
    readable time (or a torn last line while the service appends) stops the cut: nothing after it is deleted on
    a guess."""
    pos = 0
    with log.open("rb") as f:
        for line in f:
            ts = _line_time(line)
            if ts is None or ts >= cutoff:
                return pos
            pos += len(line)
    return pos


def _line_time(line: bytes) -> float | None:
    """The record time of one line; None for a line that is not a whole, timed JSON record."""
    from autooptimizer.loop.signals import record_time

    if not line.endswith(b"\n"):
        return None
    try:
        rec = json.loads(line)
    except ValueError:
        return None
    return record_time(cast("dict[str, Any]", rec)) if isinstance(rec, dict) else None


def _dirs(root: Path) -> list[tuple[str, float]]:
    if not root.is_dir():
        return []
    return [(p.name, p.stat().st_mtime) for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]


def _files(root: Path, pattern: str) -> list[tuple[str, float]]:
    return [(p.name, p.stat().st_mtime) for p in root.glob(pattern)] if root.is_dir() else []


def _mlflow_runs(settings: Settings, kept_versions: set[str]) -> tuple[list[tuple[str, float]], set[str]]:
    """(run id, start time) of the experiment's runs, and the runs a kept registered version comes from. MLflow
    not set up yet (no experiment): nothing to prune."""
    from autooptimizer.ml import model_registry as registry

    c = registry.client()
    exp = c.get_experiment_by_name(registry.EXPERIMENT)
    if exp is None:
        return [], set()
    runs = [(r.info.run_id, (r.info.start_time or 0) / 1000) for r in
            c.search_runs([exp.experiment_id], max_results=50_000)]
    keep: set[str] = set()
    found: list[Any] = []
    try:
        found = list(c.search_model_versions(f"name='{registry.REGISTERED_MODEL}'"))
    except Exception:  # noqa: BLE001 - no registered model yet: no run is referenced
        found = []
    for mv in found:
        tags: dict[str, str] = dict(mv.tags or {})
        run_id: str | None = mv.run_id
        if tags.get("autoopt_version") in kept_versions and run_id:
            keep.add(run_id)
    return runs, keep


# -- deleting ---------------------------------------------------------------------------------------------------------
def execute(settings: Settings, profile: Profile, *, dry_run: bool = False) -> dict[str, Any]:
    """Re-plan, then delete (oldest first); anything protected by now is skipped. Returns what was done."""
    p = plan(settings, profile)
    deleted: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    freed = 0
    for item in p.delete:
        if item.name in p.protected.get(item.kind, []):
            skipped.append({**item.model_dump(), "why": "protected"})
            continue
        if dry_run:
            continue
        try:
            freed += _DELETE[item.kind](settings, item.name, p)
        except Exception as exc:  # noqa: BLE001 - one item that cannot go never stops the rest
            skipped.append({**item.model_dump(), "why": f"{type(exc).__name__}: {exc}"[:300]})
            continue
        deleted.append(item.model_dump())
    return {"dry_run": dry_run, "planned": [i.model_dump() for i in p.delete], "deleted": deleted,
            "skipped": skipped, "kept": p.kept, "protected": p.protected, "bytes_freed": freed}


def _size(path: Path) -> int:
    """Bytes deleting `path` frees: a file another model version still links to (shared weights) frees nothing."""
    files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file() and not f.is_symlink()]
    return sum(st.st_size for st in (f.stat() for f in files) if st.st_nlink == 1)


def _rm_tree(path: Path) -> int:
    size = _size(path)
    shutil.rmtree(path)
    return size


def _model(settings: Settings, name: str, _p: PrunePlan) -> int:
    from autooptimizer.ml import model_registry as registry
    from autooptimizer.search import model_store

    size = _size(model_store.version_dir(name))
    registry.delete_model(name, keep_lineage=False)
    return size


def _dataset(settings: Settings, name: str, _p: PrunePlan) -> int:
    path = settings.home / "datasets" / name
    for f in path.rglob("*"):
        f.chmod(0o644)  # stored datasets are read-only
    return _rm_tree(path)


def _run(settings: Settings, name: str, _p: PrunePlan) -> int:
    from urllib.parse import urlparse

    from autooptimizer.ml import model_registry as registry

    c = registry.client()
    uri = c.get_run(name).info.artifact_uri or ""
    c.delete_run(name)
    local = Path(urlparse(uri).path).parent if uri.startswith("file:") else None
    return _rm_tree(local) if local is not None and local.is_dir() and local.name == name else 0


def _cycle(settings: Settings, name: str, _p: PrunePlan) -> int:
    return _rm_tree(settings.home / "artifacts" / name)


def _trace(settings: Settings, name: str, _p: PrunePlan) -> int:
    path = settings.home / "traces" / name
    size = path.stat().st_size
    path.unlink()
    return size


def _feedback(settings: Settings, _name: str, p: PrunePlan) -> int:
    """The cut is found again in the log as it is now, by the plan's rule (its size cap and cutoff time), not taken
    as the planned byte count: another prune (the end-of-cycle one beside an operator's) may have trimmed the log
    since this plan, and the same count cut again would take records within retention."""
    log = settings.feedback_log
    size = log.stat().st_size
    by_size = size - p.feedback_limit_bytes if p.feedback_limit_bytes is not None else 0
    by_age = first_record_since(log, p.feedback_cutoff) if p.feedback_cutoff is not None else 0
    cut = max(by_size, by_age)
    return trim_log(log, size - cut) if cut > 0 else 0


def trim_log(path: Path, keep_bytes: int) -> int:
    """Keep the newest whole lines within `keep_bytes`. The service appends (open, write, close) while this runs:
    whatever it appended after the first read is copied over just before the swap, so at most a record written in
    the last microseconds can be lost. The kept bytes are a suffix of the old file, which is what lets an open
    reader (loop/signals.FeedbackLog) find its place again. Returns the bytes cut."""
    size = path.stat().st_size
    start = max(0, size - keep_bytes)
    with path.open("rb") as f:
        f.seek(max(0, start - 1))
        whole = start == 0 or f.read(1) == b"\n"  # `start` is a line start: nothing partial to drop
        data = f.read(size - f.tell())
    if not whole:
        nl = data.find(b"\n")
        data = data[nl + 1:] if nl >= 0 else b""  # the first, partial line goes
    tmp = path.with_suffix(f".trim{os.getpid()}")
    with tmp.open("wb") as out:
        out.write(data)
        with path.open("rb") as f:
            f.seek(size)
            out.write(f.read())  # records appended since the first read
    os.replace(tmp, path)
    return size - len(data)


_DELETE: dict[str, Callable[[Settings, str, PrunePlan], int]] = {
    "model_version": _model, "dataset": _dataset, "mlflow_run": _run, "cycle_artifacts": _cycle, "trace": _trace,
    "feedback_log": _feedback}


def names(items: Iterable[PruneItem], kind: Kind) -> list[str]:
    return [i.name for i in items if i.kind == kind]
