"""Faults during a cycle: inject one fault mid-cycle, let the cycle end, clear the fault, recover, check the world.

Each fault is injected when a release cycle (canary -> A/B -> promote -> watch -> champion alias) reaches a chosen
checkpoint (`loop/checkpoints.py`), in the same small real world as the crash suite (`crash.py`):

| fault                | injected at      | how                                                             |
|----------------------|------------------|-----------------------------------------------------------------|
| `prometheus_stopped` | after the canary | the real Prometheus scraping the service stops (live A/B)       |
| `search_restarted`   | after the canary | the service loses its state: a new app on the port, stable only |
| `gitops_unreachable` | after the canary | the GitOps remote's directory is moved away                     |
| `mlflow_locked`      | after the watch  | an exclusive lock is held on MLflow's sqlite store              |
| `disk_full`          | after the canary | a full 16 KiB tmpfs on the cycle's artifacts folder (else the   |
|                      |                  | folder becomes a file, so writes fail at the file layer)        |
| `kill_switch`        | after the canary | the kill switch is turned on                                    |

A fault is `safe` when, after the cycle ended, the fault was cleared and the recovery every restart runs has run,
`crash.check_world` finds nothing wrong; its error is `clear` when the cycle's recorded reason names the fault's
cause in words (`FAULTS[...].expect`).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from autooptimizer.reliability.crash import PATHS, CrashPath, check_world, world


class FaultSpec(BaseModel):
    name: str
    at: str = Field(description="the checkpoint at which the fault is injected")
    expect: list[str] = Field(description="words, one of which the cycle's reason (or its alias error) must contain")
    outcomes: list[str] = Field(description="outcomes that are a safe end for this fault")


FAULTS: dict[str, FaultSpec] = {f.name: f for f in (
    FaultSpec(name="prometheus_stopped", at="step:canary:end", expect=["unknown", "could not be read"],
              outcomes=["ab_inconclusive", "ab_failed", "failed"]),
    FaultSpec(name="search_restarted", at="step:canary:end", expect=["does not serve git's desired state"],
              outcomes=["failed"]),
    FaultSpec(name="gitops_unreachable", at="step:canary:end", expect=["git", "GitOps"], outcomes=["failed"]),
    FaultSpec(name="mlflow_locked", at="step:watch:end", expect=["MLflow", "locked"], outcomes=["promoted"]),
    FaultSpec(name="disk_full", at="step:canary:end", expect=["No space left", "Not a directory"],
              outcomes=["failed"]),
    FaultSpec(name="kill_switch", at="step:canary:end", expect=["kill switch"], outcomes=["denied"]),
)}


class FaultOutcome(BaseModel):
    fault: str
    outcome: str
    reason: str
    safe: bool
    clear_error: bool
    problems: list[str] = Field(default_factory=list)
    seconds: float
    note: str = ""


class FaultReport(BaseModel):
    injected: int
    safe: int
    clear: int
    outcomes: list[FaultOutcome]


class _Injector:
    """Holds what one fault changed, so it can be undone after the cycle."""

    def __init__(self, spec: FaultSpec, root: Path, svc: Any, extra: dict[str, Any]) -> None:
        self.spec, self.root, self.svc, self.extra = spec, root, svc, extra
        self.undo: list[Callable[[], object]] = []  # what an undo returns is ignored
        self.note = ""
        self.fired = False

    def hook(self, name: str) -> None:
        if name == self.spec.at and not self.fired:
            self.fired = True
            getattr(self, f"_{self.spec.name}")()

    def clear(self) -> None:
        for fn in reversed(self.undo):
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - report, keep clearing
                self.note += f" clear failed: {exc}"

    # -- the faults --------------------------------------------------------------------------------------------
    def _prometheus_stopped(self) -> None:
        self.extra["prometheus"].stop()

    def _search_restarted(self) -> None:
        from autooptimizer.infra.stack import UvicornThread
        from autooptimizer.search.app import SearchService, create_app

        port = self.svc.server.port
        collection = self.svc.service.collection
        self.svc.server.stop()
        self.svc.service = SearchService(collection, "v-a")  # a fresh process knows only its start-up model
        self.svc.server = UvicornThread(create_app(self.svc.service), port=port).start()

    def _gitops_unreachable(self) -> None:
        from autooptimizer.settings import get_settings

        remote = get_settings().home / "gitops" / "deploy.git"
        away = remote.with_name("deploy.git.unreachable")
        remote.rename(away)
        self.undo.append(lambda: away.rename(remote))

    def _mlflow_locked(self) -> None:
        from autooptimizer.settings import get_settings

        db = sqlite3.connect(get_settings().path("mlflow", "mlflow.db"), timeout=1, isolation_level=None)
        db.execute("BEGIN EXCLUSIVE")
        self.undo.append(db.close)

    def _disk_full(self) -> None:
        from autooptimizer.settings import get_settings

        cycles = sorted((get_settings().home / "artifacts").iterdir())
        target = cycles[-1]
        saved = target.with_name(target.name + ".saved")
        shutil.copytree(target, saved)
        if _mount_full_tmpfs(target):
            self.note = "tmpfs"
            self.undo.append(lambda: (subprocess.run(["umount", str(target)], check=False),
                                      shutil.rmtree(target, ignore_errors=True), saved.rename(target)))
        else:  # no mount here: the folder becomes a file, so every write under it fails at the file layer
            self.note = "file-layer"
            shutil.rmtree(target)
            target.write_text("")
            self.undo.append(lambda: (target.unlink(), saved.rename(target)))

    def _kill_switch(self) -> None:
        from autooptimizer.policies.killswitch import kill_switch

        kill_switch.set(True, by="fault-suite", reason="kill switch turned on mid-cycle")
        self.undo.append(lambda: kill_switch.set(False, by="fault-suite", reason="fault cleared"))


def _mount_full_tmpfs(target: Path) -> bool:
    try:
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(target)],
                              capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    if proc.returncode != 0:
        return False
    try:
        with (target / "filler").open("wb") as fh:
            while True:
                fh.write(b"\0" * 4096)
    except OSError:
        pass
    return True


@contextmanager
def _live_prometheus(root: Path, svc: Any) -> Iterator[dict[str, Any]]:
    """A real Prometheus scraping the tiny service, and simulated traffic with feedback (for the live A/B)."""
    from autooptimizer.infra.net import free_port
    from autooptimizer.infra.prometheus import Prometheus
    from autooptimizer.settings import get_settings
    from autooptimizer.simulator import Scenario, Simulator, load_workload

    port = free_port()
    target = svc.url.removeprefix("http://")
    prom = Prometheus(root / "prom", port, {"search": [target]}).start()
    os.environ["AUTOOPT_PROMETHEUS_URL"] = prom.url
    get_settings.cache_clear()
    data = root / "tiny"
    sim = Simulator(Scenario(datasets=[str(data)], rate=20, duration=300, split=None, seed=3), svc.url,
                    workload=load_workload([data], split=None))
    sim.start()
    try:
        prom.wait_for('up{job="search"} == 1', timeout=30)
        yield {"prometheus": prom}
    finally:
        sim.stop()
        sim.join(20)
        prom.stop()


def inject(spec: FaultSpec, root: Path) -> FaultOutcome:
    """Run one release cycle with `spec`'s fault injected mid-cycle; clear it, recover, and check the world."""
    from autooptimizer.loop.checkpoints import add_checkpoint_hook
    from autooptimizer.loop.cycle import CycleOptions, CycleRunner
    from autooptimizer.search import aliases
    from autooptimizer.testing import SyntheticSource

    t0 = time.monotonic()
    path: CrashPath = PATHS["release"]
    with world(root, path) as svc:
        champion_before, gold_before = aliases.get_alias(aliases.CHAMPION), aliases.get_alias(aliases.GOLD)
        with _maybe_live(spec, root, svc) as extra:
            if spec.name == "mlflow_locked":
                from autooptimizer.ml.model_registry import sync_bootstrap_aliases

                sync_bootstrap_aliases()  # the store exists before it is locked
            injector = _Injector(spec, root, svc, extra)
            remove = add_checkpoint_hook(injector.hook)
            try:
                options = dict(path.options)
                source = None
                if spec.name == "prometheus_stopped":  # the live source: feedback log + the real Prometheus
                    options.update(ab_min_samples=8, ab_max_duration_seconds=60)
                else:
                    source = SyntheticSource(path.means or {})
                rec = CycleRunner(source=source).run(CycleOptions(**options))
            finally:
                remove()
                injector.clear()
        CycleRunner().recover()  # what the next start does first (retries failed restores too)
        problems = check_world(champion_before, gold_before)
        reason = str(rec.summary.get("reason", ""))
        alias_error = str((rec.summary.get("champion_alias") or {}).get("error", ""))
        if not injector.fired:
            problems.append(f"the fault was never injected: the cycle did not reach {spec.at}")
        if rec.outcome not in spec.outcomes:
            problems.append(f"outcome {rec.outcome} is not a safe end for {spec.name} ({spec.outcomes})")
    text = f"{reason} {alias_error}"
    return FaultOutcome(fault=spec.name, outcome=rec.outcome or "", reason=text.strip()[:600], safe=not problems,
                        clear_error=any(w.lower() in text.lower() for w in spec.expect) and "Traceback" not in text,
                        problems=problems, seconds=round(time.monotonic() - t0, 2), note=injector.note.strip())


@contextmanager
def _maybe_live(spec: FaultSpec, root: Path, svc: Any) -> Iterator[dict[str, Any]]:
    if spec.name != "prometheus_stopped":
        yield {}
        return
    with _live_prometheus(root, svc) as extra:
        yield extra


def run_fault_suite(names: list[str] | None = None,
                    on_progress: Callable[[FaultOutcome], None] | None = None) -> FaultReport:
    """Inject every fault in `names` (default: all) in its own fresh world."""
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="autoopt-faults-") as tmp:
        for name in names or list(FAULTS):
            out = inject(FAULTS[name], Path(tmp) / name)
            outcomes.append(out)
            if on_progress:
                on_progress(out)
    return FaultReport(injected=len(outcomes), safe=sum(o.safe for o in outcomes),
                       clear=sum(o.clear_error for o in outcomes), outcomes=outcomes)
