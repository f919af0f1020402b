"""Crash at every step: SIGKILL a cycle at each of its checkpoints, recover, and check the deployment is consistent.

For each cycle path (`PATHS`: latency, cost, release = canary + A/B + promote + watch, retries, deploy_watch) the
suite first runs the path once in-process and records every checkpoint it reaches (journaled step boundaries and the
points inside the deploy and rollback units, `loop/checkpoints.py`). Then, for each checkpoint, it builds a fresh
world, runs the same cycle in a child process (`pause_child`) that stops at that checkpoint, SIGKILLs it there, runs
the recovery a restart runs (`CycleRunner.recover`), and checks the invariants of `check_world`:

- the journal is closed: no cycle is `running`, and none is left with undone deployment changes (`deploy_dirty`);
- git's desired state equals what the search service serves (stable, canary, weight, replicas, rerank depth);
- the registry's `champion` names what git serves, or is unchanged from before the cycle; `gold` never moves;
- `audit verify` passes.

The world is small and real: the tiny search service (cheap `bm25` versions over a tiny corpus, real FastAPI app on a
loopback port), a real git repository, the real registry, Cedar PDP and hash-chained audit log, in a scratch
AUTOOPT_HOME. Prometheus is deliberately absent (gates read `unknown`), so paths run by `gate` (dev's mock signals),
and A/B tests and watches read a synthetic sample source that decides at once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

VERSIONS = ("v-a", "v-b", "v-c")


class CrashPath(BaseModel):
    """One cycle path: the cycle's options, its synthetic NDCG means, and what the world needs first."""

    name: str
    options: dict[str, Any]
    means: dict[str, float] | None = None
    prepare: str | None = Field(default=None, description="'promoted' (a promotion cycle ran) or 'operator_commit'")


PATHS: dict[str, CrashPath] = {p.name: p for p in (
    CrashPath(name="latency", options={"gate": "p95_latency"}),
    CrashPath(name="cost", options={"gate": "cost_budget"}),
    CrashPath(name="release", options={"gate": "ndcg_drop", "challenger": "v-b", "watch_seconds": 1},
              means={"v-a": 0.4, "v-b": 0.7}),
    CrashPath(name="retries", options={"gate": "retries"}, prepare="promoted"),
    CrashPath(name="deploy_watch", options={"gate": "deploy_watch", "watch_seconds": 2},
              means={"v-a": 0.7, "v-c": 0.1}, prepare="operator_commit"),
)}


class CrashOutcome(BaseModel):
    path: str
    point: str
    occurrence: int
    reached: bool
    consistent: bool
    problems: list[str] = Field(default_factory=list)
    seconds: float


class CrashReport(BaseModel):
    """`tried` crash points, of which `consistent` left a consistent world after recovery."""

    tried: int
    consistent: int
    per_path: dict[str, dict[str, int]]
    outcomes: list[CrashOutcome]


@contextmanager
def scratch_env(root: Path, **extra: str) -> Iterator[None]:
    """Point the settings at a scratch AUTOOPT_HOME under `root` (restored on exit)."""
    from autooptimizer.policies.pdp import reload_policies
    from autooptimizer.settings import environ

    values: dict[str, str | None] = {"AUTOOPT_HOME": str(root / "home"), "AUTOOPT_ENV": "dev",
                                     "AUTOOPT_PROMETHEUS_URL": "http://127.0.0.1:9", **extra}
    with environ(values):
        reload_policies()
        yield


@contextmanager
def world(root: Path, path: CrashPath) -> Iterator[Any]:
    """A fresh tiny world for one crash run; yields the running TinyService."""
    from autooptimizer.loop.release import Release
    from autooptimizer.search import aliases
    from autooptimizer.settings import get_settings
    from autooptimizer.testing import TinyService, make_versions

    with scratch_env(root):
        make_versions(list(VERSIONS))
        aliases.set_alias(aliases.GOLD, "v-a")
        aliases.set_alias(aliases.CHAMPION, "v-a")
        svc = TinyService(root, "v-a")
        os.environ["AUTOOPT_SEARCH_PORT"] = str(svc.server.port)
        get_settings.cache_clear()
        try:
            Release().current()  # adopt the serving state as the GitOps baseline
            _prepare(path)
            yield svc
        finally:
            svc.stop()
            os.environ.pop("AUTOOPT_SEARCH_PORT", None)


def _prepare(path: CrashPath) -> None:
    from autooptimizer.loop.cycle import CycleOptions, CycleRunner
    from autooptimizer.loop.gitops import HelmPatch
    from autooptimizer.loop.release import Release
    from autooptimizer.testing import SyntheticSource

    if path.prepare == "promoted":
        rec = CycleRunner(source=SyntheticSource({"v-a": 0.4, "v-b": 0.7})).run(
            CycleOptions(gate="ndcg_drop", challenger="v-b", watch_seconds=1))
        if rec.outcome != "promoted":
            raise RuntimeError(f"crash suite setup: the promotion cycle ended {rec.outcome}: {rec.summary}")
    elif path.prepare == "operator_commit":
        Release().deploy(HelmPatch(model_version="v-c", replicas=2), "operator: try v-c")


def check_world(champion_before: str | None, gold_before: str | None) -> list[str]:
    """The invariants after recovery; returns the problems found (empty = consistent)."""
    from autooptimizer.loop.journal import Journal
    from autooptimizer.loop.release import Release
    from autooptimizer.policies.audit import AuditLog
    from autooptimizer.search import aliases
    from autooptimizer.settings import get_settings

    problems: list[str] = []
    journal = Journal(get_settings())
    if journal.running():
        problems.append(f"cycles still running: {[c.id for c in journal.running()]}")
    dirty = [c.id for c in journal.list(limit=50) if c.deploy_dirty]
    if dirty:
        problems.append(f"cycles left with undone deployment changes: {dirty}")
    try:
        ok, desired, state = Release().consistent()
        if not ok:
            problems.append(f"git says {desired} but the service serves {state.model_dump(exclude_none=True)}")
    except Exception as exc:  # noqa: BLE001 - any failure to read is itself a finding
        problems.append(f"consistency unreadable: {type(exc).__name__}: {exc}")
        desired = None
    champion = aliases.get_alias(aliases.CHAMPION)
    serving = desired.model_version if desired is not None else None
    if champion not in (serving, champion_before):
        problems.append(f"champion alias {champion} is neither what serves ({serving}) nor the earlier champion "
                        f"({champion_before})")
    if aliases.get_alias(aliases.GOLD) != gold_before:
        problems.append("the gold alias moved")
    report = AuditLog().verify()
    if not report.ok:
        problems.append(f"audit verify: {report.problem}")
    return problems


def _plan(path: CrashPath) -> str:
    return json.dumps({"options": path.options, "means": path.means})


def enumerate_points(path: CrashPath, root: Path) -> list[tuple[str, int]]:
    """Every checkpoint the path reaches, in order, with its occurrence number (1 = first time)."""
    from autooptimizer.loop.checkpoints import add_checkpoint_hook
    from autooptimizer.loop.cycle import CycleOptions, CycleRunner
    from autooptimizer.testing import SyntheticSource

    names: list[str] = []
    with world(root, path):
        remove = add_checkpoint_hook(names.append)
        try:
            source = SyntheticSource(path.means) if path.means else None
            CycleRunner(source=source).run(CycleOptions(**path.options))
        finally:
            remove()
    counts: dict[str, int] = {}
    out = []
    for name in names:
        counts[name] = counts.get(name, 0) + 1
        out.append((name, counts[name]))
    return out


def crash_once(path: CrashPath, point: str, occurrence: int, root: Path, timeout: float = 180.0) -> CrashOutcome:
    """Run `path` in a child, SIGKILL it at the `occurrence`-th `point`, recover, and check the world."""
    from autooptimizer.loop.cycle import CycleRunner
    from autooptimizer.search import aliases

    t0 = time.monotonic()
    with world(root, path):
        champion_before, gold_before = aliases.get_alias(aliases.CHAMPION), aliases.get_alias(aliases.GOLD)
        marker = root / "paused.pid"
        cmd = [sys.executable, "-m", "autooptimizer.reliability.pause_child", "--at", point,
               "--occurrence", str(occurrence), "--marker", str(marker), "--plan", _plan(path)]
        proc = subprocess.Popen(cmd, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
        reached = _wait_marker(marker, proc, timeout)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        problems = [] if reached else [f"the child never reached {point} #{occurrence}: "
                                       f"{(proc.stdout.read() if proc.stdout else b'').decode()[-500:]}"]
        CycleRunner().recover()  # what every restart does first
        problems += check_world(champion_before, gold_before)
    return CrashOutcome(path=path.name, point=point, occurrence=occurrence, reached=reached,
                        consistent=not problems, problems=problems, seconds=round(time.monotonic() - t0, 2))


def _wait_marker(marker: Path, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if marker.exists():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def run_crash_suite(paths: list[str] | None = None, *, points: Callable[[str, list[tuple[str, int]]],
                    list[tuple[str, int]]] | None = None,
                    on_progress: Callable[[CrashOutcome], None] | None = None) -> CrashReport:
    """Crash every path in `paths` (default: all) at every checkpoint (or the subset `points(path, all)` picks)."""
    outcomes: list[CrashOutcome] = []
    with tempfile.TemporaryDirectory(prefix="autoopt-crash-") as tmp:
        base = Path(tmp)
        for name in paths or list(PATHS):
            path = PATHS[name]
            found = enumerate_points(path, base / f"{name}-enum")
            for i, (point, k) in enumerate(points(name, found) if points else found):
                out = crash_once(path, point, k, base / f"{name}-{i}")
                outcomes.append(out)
                if on_progress:
                    on_progress(out)
    per_path: dict[str, dict[str, int]] = {}
    for o in outcomes:
        row = per_path.setdefault(o.path, {"tried": 0, "consistent": 0})
        row["tried"] += 1
        row["consistent"] += int(o.consistent)
    return CrashReport(tried=len(outcomes), consistent=sum(o.consistent for o in outcomes), per_path=per_path,
                       outcomes=outcomes)
