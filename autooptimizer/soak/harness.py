"""`autoopt soak`: start the stack and the optimizer service, play a scenario's traffic and events, measure.

The harness never runs a cycle: the optimizer service (`autoopt serve`, the profile's scheduler and gates) decides
every cycle, as in production. The harness only
  - starts (and at the end stops) Prometheus, the search service and the optimizer, as `autoopt demo` does;
  - plays the timeline: the simulator's query mix and rate, faults through the service's admin API, an operator's
    GitOps commit, the kill switch through the optimizer's API, a service restart, a SIGKILL of the optimizer;
  - measures (soak/measure.py) and reports (soak/report.py).

Compressed time: the scenario's calendar runs `speed` times faster than the wall clock. The one product setting that
follows it is the scheduler's interval (`loop.intervalMinutes` = `schedule_every` / speed), written to a copy of the
environment profile in the run folder (AUTOOPT_PROFILES_DIR); gate windows, A/B and watch durations stay real time.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field

from autooptimizer.errors import ConfigError
from autooptimizer.soak import measure
from autooptimizer.soak.scenario import (
    BadModel,
    CostOverrun,
    ErrorBurst,
    Event,
    KillSwitch,
    LatencySpike,
    OptimizerKill,
    Return,
    Scenario,
    ServiceRestart,
    Shift,
)

API = "/api/v1/optimizer"
TINY_CHAMPION = "tiny-bm25"


class SoakOptions(BaseModel):
    env: str = "prod"
    speed: float | None = Field(default=None, gt=0, description="overrides the scenario's speed")
    run_dir: Path | None = None
    sample_seconds: float = Field(default=10.0, gt=0, description="wall seconds per traffic window")
    resource_seconds: float = Field(default=30.0, gt=0, description="wall seconds between resource samples")
    heartbeat_seconds: float = Field(default=60.0, gt=0, description="wall seconds between progress summaries")
    start_from: Literal["gold", "current"] = Field(
        default="gold", description="serve gold at the start (comparable runs) or keep git's desired state")
    tiny_data: bool = Field(default=False, description="write the tiny datasets and cheap bm25 versions first")
    fault_grace_seconds: float = Field(default=5.0, ge=0, description="failures this long after a fault are its own")
    supervisor_wait_seconds: float = Field(default=90.0, gt=0)
    drain_seconds: float = Field(default=900.0, ge=0, description="wait this long for a running cycle at the end")
    evaluate: bool = Field(default=True, description="run the end-of-run offline evaluations (held-out, original)")


@dataclass
class Action:
    """One thing to do at wall second `t` of the run; `background` ones (restarts, commits, waiting for a
    supervisor) run in their own thread so measuring never stops."""

    t: float
    label: str
    run: Callable[[], dict[str, Any] | None]
    sim_t: float = 0.0
    background: bool = False


@dataclass
class SoakRecord:
    """Everything the report is built from."""

    scenario: Scenario
    options: SoakOptions
    speed: float
    run_dir: Path
    t0_epoch: float = 0.0
    traffic: list[measure.TrafficSample] = field(default_factory=list)
    resources: list[measure.ResourceSample] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    cycles: list[measure.CycleRow] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=dict)
    lost_examples: list[str] = field(default_factory=list)
    setup: dict[str, Any] = field(default_factory=dict)
    final: dict[str, Any] = field(default_factory=dict)
    wall_seconds: float = 0.0
    error: str | None = None




def soak_profile_dir(env: str, scenario: Scenario, speed: float, out: Path) -> Path:
    """A copy of the profiles with `env`'s clocks compressed by `speed`: the scheduler interval (the scenario's
    `schedule_every` simulated seconds) and the retention ages (`retention.feedbackLogDays`, `maxAgeDays`: days of
    simulated time; at speed 720 a 7-day log holds 840 wall seconds of records). Refuses a profile whose scheduler
    is off (no cycle would ever start)."""
    from autooptimizer.profiles import _HERE, load_profile, profile_path

    profile = load_profile(env)
    if not profile.loop.scheduler:
        raise ConfigError(f"Profile {env!r} has the scheduler off (loop.scheduler: false): no cycle would start.",
                          "Run the soak with --env prod or --env staging, or turn the scheduler on in the profile.")
    out.mkdir(parents=True, exist_ok=True)
    src = Path(os.environ.get("AUTOOPT_PROFILES_DIR") or _HERE)
    for f in src.glob("*.yaml"):
        (out / f.name).write_text(f.read_text())
    raw = yaml.safe_load(profile_path(env).read_text())
    raw.setdefault("loop", {})["intervalMinutes"] = round(scenario.schedule_every / speed / 60.0, 4)
    retention = raw.setdefault("retention", {})
    ages = {"feedbackLogDays": profile.retention.feedback_log_days, "maxAgeDays": profile.retention.max_age_days}
    for key, days in ages.items():
        if days is not None:
            retention[key] = round(days / speed, 8)
    (out / f"{env}.yaml").write_text(f"# {env} for a soak at speed {speed:g}: loop.intervalMinutes and the retention "
                                     "ages are compressed by the speed\n" + yaml.safe_dump(raw, sort_keys=False))
    return out


class Traffic:
    """The simulator of the current phase (one per phase: the rate is fixed per simulator run), the mix it draws
    from, and the shared workload whose cursors carry over."""

    def __init__(self, workload: Any, search_url: str, log: measure.TrafficLog, seed: int) -> None:
        self.workload, self.url, self.log, self.seed = workload, search_url, log, seed
        self.sim: Any = None
        self.rate = 1.0
        self.mix: dict[str, float] = {}
        self._dropped_before = 0  # ticks dropped by the simulator runs that ended
        self._dropped_cut = 0

    def dropped_since_last(self) -> int:
        """Ticks dropped (all `concurrency` requests in flight) since the last call, over every simulator run."""
        total = self._dropped_before + (self.sim.snapshot().dropped if self.sim is not None else 0)
        delta, self._dropped_cut = total - self._dropped_cut, total
        return delta

    def start(self, rate: float) -> None:
        from autooptimizer.simulator import Scenario as SimScenario
        from autooptimizer.simulator import Simulator

        self.stop()
        self.rate = rate
        names = list(self.workload.queries)
        sc = SimScenario(datasets=names[:1], rate=rate, duration=3600, seed=self.seed, split=None)
        self.sim = Simulator(sc, self.url, workload=self.workload, on_result=self.log.add)
        if self.mix:
            self.sim.set_mix(self.mix)
        self.sim.start()

    def set_mix(self, mix: dict[str, float]) -> None:
        self.mix = dict(mix)
        if self.sim is not None:
            self.sim.set_mix(self.mix)

    def keep_running(self) -> None:
        """A simulator run is bounded (an hour); start the next one when it ended."""
        if self.sim is not None and self.sim._thread is not None and not self.sim._thread.is_alive():
            self.start(self.rate)

    def active(self) -> list[str]:
        return sorted(set(self.sim.snapshot().active)) if self.sim is not None else []

    def stop(self) -> None:
        if self.sim is not None:
            self.sim.stop()
            self._dropped_before += self.sim.join(60).dropped
            self.sim = None


def soak_workload(scenario: Scenario) -> Any:
    """The judged queries to replay: the original domain's (train split where it has one) and, of every other
    domain, only the feedback half of the seeded split the cycles make (`ml.pipeline_data.domain_split`): the other
    half is that domain's held-out set, which traffic must never serve as feedback."""
    from autooptimizer.errors import InputError
    from autooptimizer.ml.pipeline_data import domain_split
    from autooptimizer.simulator import Workload, load_workload

    out: dict[str, Any] = {}
    for name in scenario.datasets():
        wl = load_workload([name], split="train", max_queries=None, seed=scenario.seed)
        qs = next(iter(wl.queries.values()))
        if name != scenario.original:
            with contextlib.suppress(InputError):  # too few judged queries to hold any out: replay them all
                keep = set(domain_split(name, scenario.seed)[0])
                qs = [q for q in qs if q.query_id in keep]
        out[Path(name).name] = qs[: scenario.max_queries] if scenario.max_queries else qs
    return Workload(queries=out)


class Optimizer:
    """The optimizer service as the product runs it: `autoopt serve --supervise` (infra/supervisor.py), whose child
    is the API + scheduler. The harness signals the child (its pid in AUTOOPT_HOME/run/optimizer.pid) and only
    observes the supervisor bring it back; it never restarts the product itself."""

    def __init__(self, env: str, log_path: Path) -> None:
        from autooptimizer.infra.net import free_port

        self.env, self.log_path, self.port = env, log_path, free_port()
        self.svc: Any = None
        self.restarts: list[dict[str, Any]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The supervisor's pid (its process tree holds the service, for RSS)."""
        proc = self.svc.proc if self.svc is not None else None
        return proc.pid if proc is not None else None

    def start(self, timeout: float = 180.0) -> None:
        from autooptimizer.infra.stack import SubprocessService

        argv = [sys.executable, "-m", "autooptimizer", "serve", "--supervise", "--port", str(self.port),
                "--env", self.env]
        self.svc = SubprocessService(argv, self.port, self.log_path, ready_path=f"{API}/health")
        self.svc.start(timeout=timeout)

    def alive(self) -> bool:
        return self.svc is not None and self.svc.proc is not None and self.svc.proc.poll() is None

    def child_pid(self) -> int | None:
        """The service's pid as its supervisor wrote it; None when the file is missing or unreadable."""
        return read_pid(_pid_file())

    def sigkill_child(self) -> int | None:
        """SIGKILL the supervised service (never the supervisor); returns the pid killed, None when none is known."""
        pid = self.child_pid()
        if pid is None:
            return None
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        return pid

    def stop(self) -> None:
        if self.svc is not None:
            self.svc.stop()
            self.svc = None

    def post(self, path: str, body: dict[str, Any], token: str, tries: int = 30) -> dict[str, Any]:
        """POST to the API as an operator, retrying while the service is (re)starting."""
        import httpx

        last = ""
        for _ in range(tries):
            try:
                r = httpx.post(self.url + API + path, json=body, headers={"Authorization": f"Bearer {token}"},
                               timeout=10)
                if r.status_code < 500:
                    return {"status": r.status_code, "body": r.json()}
                last = f"HTTP {r.status_code}"
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(1.0)
        return {"error": last}


class SoakHarness:
    """One soak run. `run()` returns the record; it always stops what it started."""

    def __init__(self, scenario: Scenario, options: SoakOptions | None = None,
                 say: Callable[[str], None] | None = None) -> None:
        from autooptimizer.settings import get_settings

        self.scenario = scenario
        self.opts = options or SoakOptions()
        self.speed = self.opts.speed or scenario.speed
        self.home = get_settings().home
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.run_dir = self.opts.run_dir or self.home / "soak" / f"{scenario.name}-{stamp}"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.say_fn = say or (lambda line: print(line, file=sys.stderr, flush=True))
        self.rec = SoakRecord(scenario=scenario, options=self.opts, speed=self.speed, run_dir=self.run_dir)
        self.faults = measure.FaultWindows(grace=self.opts.fault_grace_seconds)
        self.tlog = measure.TrafficLog(self.faults)
        self.token = os.environ.get("AUTOOPT_API_TOKEN") or secrets.token_urlsafe(24)
        self.stack: Any = None
        self.traffic: Traffic | None = None
        self.optimizer: Optimizer | None = None
        self.t0 = 0.0
        self.phase = ""
        self.cycles_seen: dict[str, str | None] = {}
        self.workers: list[threading.Thread] = []
        self.bad_served: dict[str, int] = {}  # bad version -> its fault window, open while the service serves it

    # -- progress ------------------------------------------------------------------------------------------------
    def now(self) -> float:
        return time.monotonic() - self.t0 if self.t0 else 0.0

    def say(self, msg: str) -> None:
        t = self.now()
        self.say_fn(f"[{t:7.1f}s | day {t * self.speed / 86400:5.2f}] {msg}")

    # -- the run -------------------------------------------------------------------------------------------------
    def run(self) -> SoakRecord:
        from autooptimizer.infra.interrupts import sigterm_interrupts
        from autooptimizer.settings import environ

        env: dict[str, str | None] = {"AUTOOPT_ENV": self.opts.env, "AUTOOPT_API_TOKEN": self.token}
        if self.opts.tiny_data:
            env["AUTOOPT_DATA_DIR"] = str(self.run_dir / "data")
        started = time.monotonic()
        with environ(env, also=("AUTOOPT_PROFILES_DIR", "AUTOOPT_PROMETHEUS_URL", "AUTOOPT_SEARCH_PORT")), \
                sigterm_interrupts():
            try:
                self._setup()
                self._play()
            except KeyboardInterrupt as exc:
                self.rec.error = f"interrupted ({exc or 'Ctrl-C'})"
                self.say("interrupted: stopping everything")
            except Exception as exc:  # noqa: BLE001 - reported in the record; everything is still stopped
                self.rec.error = f"{type(exc).__name__}: {getattr(exc, 'problem', None) or exc}"
                self.say(f"error: {self.rec.error}")
            finally:
                self._finish()
        self.rec.wall_seconds = round(time.monotonic() - started, 1)
        return self.rec

    def _setup(self) -> None:
        from autooptimizer.infra.stack import LocalStack
        from autooptimizer.profiles import load_profile
        from autooptimizer.settings import get_settings
        from autooptimizer.soak.scenario import check_datasets

        if self.opts.tiny_data:
            self.rec.setup["tiny_data"] = write_tiny_world(self.run_dir / "data")
        check_datasets(self.scenario)
        profiles = soak_profile_dir(self.opts.env, self.scenario, self.speed, self.run_dir / "profiles")
        os.environ["AUTOOPT_PROFILES_DIR"] = str(profiles)
        get_settings.cache_clear()
        version = self._starting_version()
        datasets = self.scenario.datasets()
        self.say(f"scenario {self.scenario.name}: {self.scenario.wall_seconds(self.speed):.0f} s of wall time at "
                 f"speed {self.speed:g}, {self.scenario.scheduled_cycles()} interval cycles due, "
                 f"domains {'+'.join(datasets)}; starting the search service ({version}) and Prometheus")
        self.stack = LocalStack(service="process", profile=load_profile(self.opts.env), root=self.run_dir / "prom",
                                serve_args=["--datasets", ",".join(datasets), "--model", version, "--background"])
        self.stack.start()
        os.environ["AUTOOPT_PROMETHEUS_URL"] = self.stack.prometheus_url
        os.environ["AUTOOPT_SEARCH_PORT"] = self.stack.search_url.rsplit(":", 1)[1]
        get_settings.cache_clear()
        self._wait_serving(version)
        from autooptimizer.search import aliases

        self.rec.setup["gold_at_start"] = aliases.get_alias(aliases.GOLD)
        self.rec.setup["gitops"] = align_git(version, reset_champion=self.opts.start_from == "gold")
        self.traffic = Traffic(soak_workload(self.scenario), self.stack.search_url, self.tlog, self.scenario.seed)
        self.optimizer = Optimizer(self.opts.env, self.run_dir / "optimizer.log")
        self.say(f"starting the optimizer service (autoopt serve --supervise --env {self.opts.env}, scheduler every "
                 f"{self.scenario.schedule_every / self.speed:.1f} s)")
        self.optimizer.start()
        self.rec.setup.update({"search_url": self.stack.search_url, "prometheus_url": self.stack.prometheus_url,
                               "optimizer_url": self.optimizer.url, "version": version, "profiles": str(profiles)})

    def _starting_version(self) -> str:
        from autooptimizer.loop.gitops import GitOpsRepo
        from autooptimizer.search import aliases
        from autooptimizer.settings import get_settings

        if self.opts.start_from == "current":
            settings = get_settings()
            with contextlib.suppress(Exception):
                patch = GitOpsRepo(settings, settings.env).read_patch()
                if patch is not None:
                    return patch.model_version
        version = aliases.get_alias(aliases.GOLD) or aliases.get_alias(aliases.CHAMPION)
        if version:
            return version
        self.say("no champion yet: running the bootstrap (minutes on this CPU)")
        from autooptimizer.search.bootstrap import bootstrap

        return bootstrap(progress=False, log=self.say).version

    def _wait_serving(self, version: str) -> None:
        import httpx

        deadline = time.monotonic() + self.stack.service_timeout
        while time.monotonic() < deadline:
            state = httpx.get(self.stack.search_url + "/admin/state", timeout=10).json()
            warming = state.get("warming") or {}
            if warming.get("error"):
                raise ConfigError(f"The search service could not embed the documents of {version}: "
                                  f"{warming['error']}", f"See {self.stack.service_log}.")
            if (state.get("stable") or {}).get("version") == version:
                return
            time.sleep(2.0)
        raise ConfigError(f"The search service did not serve {version} within {self.stack.service_timeout:g} s.",
                          f"See {self.stack.service_log}.")

    # -- the timeline ------------------------------------------------------------------------------------------------
    def actions(self) -> list[Action]:
        """The timeline in wall seconds: phase starts, then events (a kill switch adds its own `off`)."""
        sc, speed = self.scenario, self.speed
        out: list[Action] = []
        for start, phase in zip(sc.phase_starts(), sc.phases, strict=True):
            out.append(Action(start / speed, f"phase {phase.name} (rate {phase.rate:g}/s"
                              + (f", mix {_mix_text(phase.mix)})" if phase.mix else ")"),
                              lambda p=phase: self._phase(p), start))
        for ev in sc.events:
            slow = isinstance(ev, ServiceRestart | BadModel | KillSwitch | OptimizerKill)
            out.append(Action(ev.at / speed, _event_text(ev, speed), lambda e=ev: self._event(e), ev.at, slow))
            if isinstance(ev, KillSwitch):
                out.append(Action((ev.at + ev.duration) / speed, "kill switch off",
                                  lambda: self._kill_switch(False), ev.at + ev.duration, True))
        return sorted(out, key=lambda a: a.t)

    def _play(self) -> None:
        assert self.traffic is not None
        todo = self.actions()
        end = self.scenario.wall_seconds(self.speed)
        self.t0 = time.monotonic()
        self.rec.t0_epoch = time.time()
        last_cut = self.t0
        next_sample, next_res, next_beat = self.opts.sample_seconds, 0.0, self.opts.heartbeat_seconds
        while True:
            t = self.now()
            while todo and todo[0].t <= t:
                self._do(todo.pop(0))
            if t >= next_sample or t >= end:
                now = time.monotonic()
                sample = self.tlog.cut(t=round(t, 2), sim_t=round(t * self.speed, 1), phase=self.phase,
                                       mix=self.traffic.active(), since=last_cut, now=now,
                                       dropped=self.traffic.dropped_since_last())
                sample.cost_per_1k = measure.cost_per_1k(self.stack.prometheus_url, now - last_cut)
                self.rec.traffic.append(sample)
                last_cut, next_sample = now, next_sample + self.opts.sample_seconds
                self._poll_cycles()
                self._bad_model_gone()
            if t >= next_res:
                self._resources()
                next_res += self.opts.resource_seconds
            if t >= next_beat:
                self._heartbeat()
                next_beat += self.opts.heartbeat_seconds
            if t >= end and not todo:
                break
            self.traffic.keep_running()
            time.sleep(min(0.5, max(0.05, min(next_sample, next_res) - self.now())))
        self._resources()
        self.say("timeline done")

    def _do(self, action: Action) -> None:
        self.say(action.label)
        if action.background:
            worker = threading.Thread(target=self._play_one, args=(action,), name="soak-event", daemon=True)
            self.workers.append(worker)
            worker.start()
        else:
            self._play_one(action)

    def _play_one(self, action: Action) -> None:
        t = round(self.now(), 2)
        try:
            detail = action.run() or {}
        except Exception as exc:  # noqa: BLE001 - an event that could not be played is recorded, the run goes on
            detail = {"error": f"{type(exc).__name__}: {getattr(exc, 'problem', None) or exc}"}
            self.say(f"  could not play it: {detail['error']}")
        self.rec.events.append({"t": t, "sim_t": action.sim_t, "label": action.label, **detail})
        if detail.get("note"):
            self.say(f"  {action.label}: {detail['note']}")

    def _phase(self, phase: Any) -> dict[str, Any]:
        assert self.traffic is not None
        self.phase = phase.name
        if phase.mix:
            self.traffic.mix = dict(phase.mix)
        self.traffic.start(phase.rate)
        return {"kind": "phase", "name": phase.name, "rate": phase.rate, "mix": self.traffic.mix}

    def _event(self, ev: Event) -> dict[str, Any] | None:
        from autooptimizer.simulator import inject_fault

        assert self.traffic is not None and self.optimizer is not None
        wall = getattr(ev, "duration", 0.0) / self.speed
        if isinstance(ev, Shift | Return):
            self.traffic.set_mix(ev.to)
            return {"kind": ev.kind, "mix": ev.to}
        if isinstance(ev, LatencySpike | ErrorBurst | CostOverrun):
            fault = fault_spec(ev, wall)
            now = time.monotonic()
            self.faults.open(now, now + wall)
            answer = inject_fault(self.stack.search_url, fault, self.token)
            return {"kind": ev.kind, "wall_seconds": round(wall, 1), "answer": answer}
        if isinstance(ev, ServiceRestart):
            return self._restart_service()
        if isinstance(ev, BadModel):
            window = self.faults.open(time.monotonic())
            try:
                out = operator_commit_bad_model(ev.version)
            except BaseException:
                self.faults.close(window, time.monotonic())
                raise
            self.bad_served[ev.version] = window
            return out
        if isinstance(ev, KillSwitch):
            return self._kill_switch(True)
        if isinstance(ev, OptimizerKill):
            return self._kill_optimizer()
        return None

    def _kill_switch(self, on: bool) -> dict[str, Any]:
        assert self.optimizer is not None
        answer = self.optimizer.post(f"/kill-switch/{'on' if on else 'off'}",
                                     {"reason": f"soak scenario {self.scenario.name}"}, self.token)
        return {"kind": "kill_switch", "on": on, "answer": answer}

    def _restart_service(self) -> dict[str, Any]:
        """Stop the search process and start it again on the same port from git's desired state (a pod restart:
        the Deployment comes back with the values GitOps holds)."""
        from autooptimizer.infra.stack import SubprocessService
        from autooptimizer.loop.deployer import get_deployer
        from autooptimizer.loop.gitops import GitOpsRepo
        from autooptimizer.settings import get_settings

        settings = get_settings()
        git = GitOpsRepo(settings, settings.env)
        patch, sha = git.read_patch(), git.head()
        if patch is None:
            raise ConfigError("GitOps holds no desired state to restart the service from.", "Check the gitops repo.")
        old = self.stack.service
        port = old.port
        window = self.faults.open(time.monotonic())
        t = time.monotonic()
        old.stop()
        argv = [sys.executable, "-m", "autooptimizer.infra.serve", "--port", str(port),
                "--datasets", ",".join(self.scenario.datasets()), "--model", patch.model_version]
        if patch.canary_version and patch.canary_weight > 0:
            argv += ["--canary", patch.canary_version, "--canary-weight", str(patch.canary_weight)]
        if patch.rerank_depth:
            argv += ["--rerank-depth", str(patch.rerank_depth)]
        svc = SubprocessService(argv, port, self.stack.service_log)
        try:
            svc.start(timeout=self.stack.service_timeout)
            self.stack.service = svc
            state = get_deployer(settings).apply(patch, sha)  # the rest of the spec (replicas), as a sync would
        finally:
            self.faults.close(window, time.monotonic())
        return {"kind": "service_restart", "down_seconds": round(time.monotonic() - t, 1),
                "serving": state.stable, "desired": patch.model_version}

    def _kill_optimizer(self) -> dict[str, Any]:
        """SIGKILL the optimizer service (the supervisor's child); then only watch: back means a new child pid in
        run/optimizer.pid answering /health. The harness never restarts it (`restarted_by: none` when nothing did)."""
        assert self.optimizer is not None
        pid = self.optimizer.sigkill_child()
        if pid is None:
            return {"kind": "optimizer_kill", "pid": None, "restarted_by": "none",
                    "note": f"no service pid in {_pid_file()} (is the optimizer supervised?)"}
        t = time.monotonic()
        back = wait_restarted(self.optimizer.url + f"{API}/health", pid, self.opts.supervisor_wait_seconds)
        if back is not None:
            return {"kind": "optimizer_kill", "pid": pid, "new_pid": back, "restarted_by": "supervisor",
                    "back_after_s": round(time.monotonic() - t, 1)}
        wait = self.opts.supervisor_wait_seconds
        return {"kind": "optimizer_kill", "pid": pid, "restarted_by": "none", "back_after_s": None,
                "note": f"the supervisor did not bring the optimizer back within {wait:g} s"}

    # -- measuring -----------------------------------------------------------------------------------------------
    def _resources(self) -> None:
        rss: dict[str, int] = {"harness": measure.rss_bytes(os.getpid())}
        if self.stack is not None and self.stack.service is not None and self.stack.service.proc is not None:
            rss["search"] = measure.tree_rss_bytes(self.stack.service.proc.pid)
        prom = getattr(self.stack, "prometheus", None)
        proc = getattr(prom, "proc", None)
        if proc is not None:
            rss["prometheus"] = measure.tree_rss_bytes(proc.pid)
        if self.optimizer is not None and self.optimizer.pid is not None:
            rss["optimizer"] = measure.tree_rss_bytes(self.optimizer.pid)
        folders = measure.disk_by_folder(self.home)
        self.rec.resources.append(measure.ResourceSample(
            t=round(self.now(), 2), disk_bytes=sum(folders.values()), rss_bytes=rss, versions=measure.versions_count(),
            audit_bytes=measure.audit_bytes(self.home), disk_by_folder=folders))

    def _poll_cycles(self) -> None:
        try:
            rows = measure.read_cycles(self.rec.t0_epoch - 1, self.rec.t0_epoch)
        except Exception:  # noqa: BLE001 - the journal is busy; the next poll reads it
            return
        for row in rows:
            if self.cycles_seen.get(row.id, "new") == row.outcome:
                continue
            if row.id not in self.cycles_seen:
                self.say(f"cycle {row.id} started ({row.trigger}, gate {row.gate or '-'})")
            if row.outcome:
                self.say(f"cycle {row.id} {row.trigger}/{row.gate or '-'}: {row.outcome}"
                         + (f" ({row.reason[:100]})" if row.reason else ""))
            self.cycles_seen[row.id] = row.outcome

    def _bad_model_gone(self) -> None:
        """A bad model's fault lasts while the service serves it (the loop's to undo): failures then are the
        injected fault's, not lost. Closed, with the time it took, once neither stable nor canary is the bad one."""
        import httpx

        for version, window in list(self.bad_served.items()):
            try:
                state = httpx.get(self.stack.search_url + "/admin/state", timeout=5).json()
            except (httpx.HTTPError, ValueError):
                continue  # unreadable: the window stays open
            serving = {(state.get("stable") or {}).get("version"), (state.get("canary") or {}).get("version")}
            if version not in serving:
                self.faults.close(window, time.monotonic())
                del self.bad_served[version]
                self.say(f"the service no longer serves {version}")
                self.rec.events.append({"t": round(self.now(), 2), "sim_t": round(self.now() * self.speed, 1),
                                        "label": f"{version} no longer served", "kind": "bad_model_gone"})

    def _heartbeat(self) -> None:
        recent = self.rec.traffic[-6:]
        ndcg: dict[str, float] = {}
        for d in {d for s in recent for d in s.ndcg}:
            value, _ = measure.mean_ndcg(recent, d)
            if value is not None:
                ndcg[d] = value
        p95 = measure.percentile([s.p95_ms for s in recent if s.p95_ms is not None], 0.5)
        tot = self.tlog.totals
        self.say(f"traffic sent {tot['sent']} failed {tot['failed']} (lost {tot['failed_lost']}), NDCG@10 "
                 + " ".join(f"{d}={v:.3f}" for d, v in sorted(ndcg.items()))
                 + (f", p95 {p95:.0f} ms" if p95 else "") + f", cycles {len(self.cycles_seen)}")

    # -- the end -------------------------------------------------------------------------------------------------
    def _finish(self) -> None:
        for worker in self.workers:  # an event still being played (a restart, a supervisor wait) ends first
            worker.join(self.opts.supervisor_wait_seconds + 300)
        if self.traffic is not None:
            self.traffic.stop()
        try:
            if self.optimizer is not None and self.rec.error is None:
                self._drain()
        finally:
            if self.optimizer is not None:
                self.optimizer.stop()
        if self.rec.t0_epoch:
            with contextlib.suppress(Exception):
                self.rec.cycles = measure.read_cycles(self.rec.t0_epoch - 1, self.rec.t0_epoch)
        self.rec.totals = dict(self.tlog.totals)
        self.rec.lost_examples = list(self.tlog.lost_examples)
        try:
            if self.stack is not None and self.rec.t0_epoch:
                from autooptimizer.soak.checks import final_state

                self.say("final checks: git/service/registry, audit, offline NDCG of the champion")
                self.rec.final = final_state(self.scenario, self.rec.cycles, evaluate=self.opts.evaluate)
        except Exception as exc:  # noqa: BLE001 - the report says what could not be read
            self.rec.final = {"error": f"{type(exc).__name__}: {getattr(exc, 'problem', None) or exc}"}
        finally:
            if self.stack is not None:
                self.say("stopping the search service and Prometheus")
                with contextlib.suppress(Exception):
                    self.stack.stop()

    def _drain(self) -> None:
        """Let a running cycle end before the optimizer stops (a cycle killed at the end would be the harness's
        doing). New cycles may start meanwhile; the optimizer is stopped at the first moment none runs."""
        from autooptimizer.loop.journal import Journal
        from autooptimizer.settings import get_settings

        deadline = time.monotonic() + self.opts.drain_seconds
        journal = Journal(get_settings())
        said = False
        while time.monotonic() < deadline:
            running = journal.running()
            if not running:
                return
            if not said:
                self.say(f"waiting for cycle {running[0].id} to end before stopping the optimizer")
                said = True
            self._poll_cycles()
            time.sleep(2.0)
        self.say(f"a cycle was still running after {self.opts.drain_seconds:g} s; stopping anyway")


def _pid_file() -> Path:
    from autooptimizer.settings import get_settings

    return get_settings().path("run", "optimizer.pid")


def read_pid(path: Path) -> int | None:
    """The pid in a pid file; None when it is missing, empty or not a number."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def wait_restarted(health_url: str, old_pid: int, timeout: float, pid_file: Path | None = None) -> int | None:
    """Wait until the supervisor has started a new service (a pid other than `old_pid` in its pid file) that answers
    `health_url` with 200; returns the new pid, None after `timeout` seconds."""
    import httpx

    path = pid_file or _pid_file()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = read_pid(path)
        if new is not None and new != old_pid:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(health_url, timeout=2).status_code == 200:
                    return new
        time.sleep(1.0)
    return None


def fault_spec(ev: LatencySpike | ErrorBurst | CostOverrun, wall: float) -> Any:
    """The service-side fault (POST /admin/faults, the simulator's FaultSpec) for a timeline event lasting `wall`
    seconds of wall time."""
    from autooptimizer.simulator import FaultSpec

    if isinstance(ev, LatencySpike):
        return FaultSpec(kind="latency", duration=wall, latency_ms=ev.latency_ms)
    if isinstance(ev, ErrorBurst):
        return FaultSpec(kind="errors", duration=wall, error_rate=ev.error_rate)
    return FaultSpec(kind="cost", duration=wall, cost_multiplier=ev.multiplier)


def _mix_text(mix: dict[str, float]) -> str:
    return "+".join(f"{d}" if len(mix) == 1 else f"{d}:{w:g}" for d, w in mix.items())


def _event_text(ev: Event, speed: float) -> str:
    if isinstance(ev, Shift | Return):
        return f"{'corpus shift' if ev.kind == 'shift' else 'return'} to {_mix_text(ev.to)}"
    wall = getattr(ev, "duration", None)
    return ev.kind.replace("_", " ") + (f" for {wall / speed:.0f} s" if wall else "")


def align_git(version: str, *, reset_champion: bool) -> dict[str, Any]:
    """Before the timeline: GitOps must describe what the service serves (one operator commit when it does not).
    With `reset_champion` (a run from gold) the run starts from gold's default deployment: the registry's champion
    names it and git holds only `version` (1 replica, the default rerank depth), so a warm home's leftover scaling or
    variant from an earlier run (8 replicas at depth 10 in the second month run) does not start the run at the
    remedies' bounds."""
    from autooptimizer.loop.gitops import HelmPatch
    from autooptimizer.loop.release import Release
    from autooptimizer.search import aliases

    rel = Release()
    current, head = rel.current()
    out: dict[str, Any] = {"committed": False, "revision": head}
    if reset_champion:
        patch = HelmPatch(model_version=version)
    else:
        patch = current.model_copy(update={"model_version": version, "canary_version": None, "canary_weight": 0.0})
    if patch != current:
        rel.deploy(patch, f"Soak: serve {version} at the start (was {current.model_version}, "
                   f"{current.replicas} replicas, rerank depth {current.rerank_depth or 'default'})")
        out = {"committed": True, "revision": rel.git.head(), "was": current.model_dump(exclude_none=True)}
    if reset_champion and aliases.get_alias(aliases.CHAMPION) != version:
        out["champion_was"] = aliases.get_alias(aliases.CHAMPION)
        aliases.set_alias(aliases.CHAMPION, version)
    return out


def operator_commit_bad_model(version: str) -> dict[str, Any]:
    """An operator promotes a bad version by a GitOps commit (as `autoopt demo`'s bad phase does); if the version
    does not exist it is the demo's untrained cross-encoder head, which ranks at random."""
    from autooptimizer.loop.release import Release
    from autooptimizer.search import model_store
    from autooptimizer.search.model_store import ModelSpec

    if not model_store.exists(version):
        model_store.save(ModelSpec(version=version, kind="cross_encoder", fusion_weight=1.0, rerank_depth=20,
                                   notes="deliberately bad: an untrained cross-encoder head ranks at random"))
    rel = Release()
    current, _ = rel.current()
    result = rel.deploy(current.model_copy(update={"model_version": version, "canary_version": None,
                                                   "canary_weight": 0.0}), f"Promote {version} (manual)")
    return {"kind": "bad_model", "version": version, "replaced": current.model_version,
            "revision": result.revision}


def write_tiny_world(data: Path) -> dict[str, Any]:
    """The CI soak's world: tiny-orig and tiny-dom (search/sample_data.py) under `data`, and a cheap bm25 version as
    gold and champion when the home has none."""
    from autooptimizer.search import aliases
    from autooptimizer.search.sample_data import write_tiny_domain, write_tiny_original
    from autooptimizer.testing import make_versions

    write_tiny_original(data / "tiny-orig")
    write_tiny_domain(data / "tiny-dom")
    make_versions([TINY_CHAMPION])
    aliases.set_alias(aliases.GOLD, TINY_CHAMPION, only_if_missing=True)
    aliases.set_alias(aliases.CHAMPION, TINY_CHAMPION, only_if_missing=True)
    return {"data": str(data), "champion": aliases.get_alias(aliases.CHAMPION)}
