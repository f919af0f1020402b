"""`autoopt bench gates`: how fast each gate fires after its fault, and the service's p95 at 10 req/s;
`autoopt bench gates --aa`: how often each gate fires when nothing changes (false alarms), with and without the
minimum-sample and N-consecutive-readings rules (see `run_aa_bench`).

It starts the local stack (the champion over scifact + cran as a subprocess, a real Prometheus with a 1 s scrape)
and the simulator replaying SciFact train queries. First it measures latency with no fault (client-side p50/p95 and
Prometheus' histogram p95). Then, per trial and gate: wait until the gate reads ok, inject its fault (latency,
cost at 3x the budget threshold, or retries, via POST /admin/faults; a shift to cran for NDCG), time until the gate
reads `firing` (gates polled every 0.25 s), clear the fault (or shift back) and time the recovery to ok.
Windows and thresholds come from the env profile.
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from autooptimizer.simulator.scenario import FaultKind

FAULT_FOR_GATE: dict[str, FaultKind | Literal["shift"]] = {"p95_latency": "latency", "cost_budget": "cost",
                                                           "retries": "retries", "ndcg_drop": "shift"}


class GateTimes(BaseModel):
    fault: str
    fire_s: list[float | None] = Field(default_factory=list, description="None = did not fire within the timeout")
    recover_s: list[float | None] = Field(default_factory=list)
    fired_values: list[float | None] = Field(default_factory=list)

    @property
    def fire_p50(self) -> float | None:
        got = [t for t in self.fire_s if t is not None]
        return statistics.median(got) if got else None


class LatencyResult(BaseModel):
    rate: float
    seconds: float
    requests: int
    errors: int
    client_p50_ms: float | None
    client_p95_ms: float | None
    prometheus_p95_ms: float | None


class GatesBench(BaseModel):
    trials: int
    env: str
    window_s: int
    baseline_window_s: int
    model: str
    cpu: str
    latency: LatencyResult | None = None
    gates: dict[str, GateTimes] = Field(default_factory=dict)
    wall_s: float = 0.0

    def render(self) -> str:
        lines = [f"gates bench ({self.env}: window {self.window_s}s, baseline {self.baseline_window_s}s, "
                 f"1 s scrape; model {self.model}; {self.cpu})"]
        if self.latency:
            lt = self.latency
            lines.append(f"search latency at {lt.rate:g} req/s over {lt.seconds:g}s ({lt.requests} requests, "
                         f"{lt.errors} errors): client p50 {lt.client_p50_ms:.0f} ms, p95 {lt.client_p95_ms:.0f} ms;"
                         f" Prometheus p95 {_fmt(lt.prometheus_p95_ms)} ms")
        lines.append(f"{'gate':12s} {'fault':8s} {'fire p50 s':>10s}  fire s (each trial)        recover s")
        for name, g in self.gates.items():
            fires = ", ".join(_fmt(t) for t in g.fire_s)
            recs = ", ".join(_fmt(t) for t in g.recover_s)
            lines.append(f"{name:12s} {g.fault:8s} {_fmt(g.fire_p50):>10s}  {fires:26s} {recs}")
        lines.append(f"wall {self.wall_s:.0f} s")
        return "\n".join(lines)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def _cpu() -> str:
    model = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            model = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), model)
    except OSError:
        pass
    return f"{os.cpu_count()} cores {model}".strip()


def _wait(
    ctx: Any, name: str, status: str, timeout: float, poll: float = 0.25, since: float | None = None
) -> tuple[float | None, Any]:
    """Seconds from `since` (default now) until gate `name` reads `status`, or None after `timeout`."""
    from autooptimizer.gates import evaluate_gates

    t0 = since if since is not None else time.monotonic()
    gate = None
    while time.monotonic() - t0 < timeout:
        gate = evaluate_gates(prometheus_url=ctx["prom"], profile=ctx["profile"]).gate(name)
        if gate.status == status:
            return time.monotonic() - t0, gate
        time.sleep(poll)
    return None, gate


def run_gates_bench(
    trials: int = 3,
    rate: float = 10.0,
    latency_seconds: float = 30.0,
    env: str | None = None,
    model: str | None = None,
    progress: bool = True,
    fire_timeout: float = 60.0,
    healthy: str = "scifact",
    shifted: str = "cran",
    split: str | None = "train",
) -> GatesBench:
    """Run the benchmark; `healthy`/`shifted` are the datasets before and during the NDCG trials (names or paths)."""
    from autooptimizer.infra.stack import LocalStack
    from autooptimizer.profiles import load_profile
    from autooptimizer.search import aliases
    from autooptimizer.settings import get_settings
    from autooptimizer.simulator import FaultSpec, Scenario, Simulator, clear_faults, inject_fault, load_workload

    say = print if progress else (lambda *_a, **_k: None)
    settings = get_settings()
    profile = load_profile(env or settings.env)
    version = model or aliases.require_alias(aliases.CHAMPION)
    recover_timeout = profile.gates.window_seconds + 60.0
    t_start = time.monotonic()
    out = GatesBench(trials=trials, env=profile.name, window_s=profile.gates.window_seconds,
                     baseline_window_s=profile.gates.baseline_window_seconds, model=version, cpu=_cpu())
    say(f"starting the stack (service over {healthy}+{shifted}, Prometheus) ...")
    stack = LocalStack(service="process", serve_args=["--datasets", f"{healthy},{shifted}", "--model", version],
                       profile=profile)
    sim = None
    try:
        stack.start()
        ctx = {"prom": stack.prometheus_url, "profile": profile}
        workload = load_workload([healthy, shifted], split=split, max_queries=100)
        scenario = Scenario(datasets=[healthy], rate=rate, duration=3600, max_queries=100, split=split)
        sim = Simulator(scenario, stack.search_url, workload=workload).start()
        time.sleep(5.0)  # warm-up: first requests pay lazy initialisation
        n0 = len(sim.latencies_ms())
        e0 = sim.snapshot().errors
        say(f"measuring latency at {rate:g} req/s for {latency_seconds:g} s ...")
        time.sleep(latency_seconds)
        lat = sim.latencies_ms()[n0:]
        from autooptimizer.promql import query
        from autooptimizer.search import metric_names as m

        w = int(latency_seconds)
        prom = query(f"1000 * histogram_quantile(0.95, sum by (le) (rate({m.REQUEST_SECONDS}_bucket[{w}s])))",
                     stack.prometheus_url)
        from autooptimizer.simulator.runner import _percentile

        out.latency = LatencyResult(
            rate=rate, seconds=latency_seconds, requests=len(lat), errors=sim.snapshot().errors - e0,
            client_p50_ms=_percentile(lat, 0.5), client_p95_ms=_percentile(lat, 0.95),
            prometheus_p95_ms=prom.samples[0]["value"] if prom.ok and prom.samples else None,
        )
        say(out.render().splitlines()[1])
        out.gates = {name: GateTimes(fault=fault) for name, fault in FAULT_FOR_GATE.items()}
        for trial in range(trials):
            for name, fault in FAULT_FOR_GATE.items():
                times = out.gates[name]
                ready, ok_gate = _wait(ctx, name, "ok", recover_timeout)
                if ready is None:
                    say(f"  {name}: not ok before trial {trial + 1}; skipping")
                    times.fire_s.append(None)
                    times.recover_s.append(None)
                    times.fired_values.append(None)
                    continue
                t_inject = time.monotonic()
                if fault == "shift":
                    sim.shift(shifted)
                else:
                    spec = FaultSpec(kind=fault, duration=fire_timeout + 30)
                    if fault == "cost" and ok_gate.value:  # overrun the budget 3x, whatever the normal spend is
                        spec.cost_multiplier = min(10_000.0, max(50.0, 3 * ok_gate.threshold / ok_gate.value))
                    inject_fault(stack.search_url, spec)
                fire_s, gate = _wait(ctx, name, "firing", fire_timeout, since=t_inject)
                times.fire_s.append(None if fire_s is None else round(fire_s, 2))
                times.fired_values.append(gate.value if gate is not None else None)
                if fault == "shift":
                    sim.shift(healthy)
                else:
                    clear_faults(stack.search_url)
                rec, _ = _wait(ctx, name, "ok", recover_timeout, poll=0.5)
                times.recover_s.append(None if rec is None else round(rec, 1))
                say(f"  trial {trial + 1} {name:12s} fired after {_fmt(fire_s)} s, ok again after {_fmt(rec)} s")
    finally:
        if sim is not None:
            sim.stop()
            sim.join(30)
        stack.stop()
    out.wall_s = round(time.monotonic() - t_start, 1)
    return out


# -- A/A: how often does each gate fire when nothing changes? -------------------------------------------------------
MIN_GRID = {"ndcg_drop": (1, 25, 50, 100, 150, 200, 300), "p95_latency": (1, 10, 20, 50),
            "cost_budget": (1, 10, 20, 50), "retries": (1, 10, 20, 50)}
N_GRID = (1, 2, 3, 5)


class AAReading(BaseModel):
    """One gate at one reading: its status judged on the value alone, the value and the sample counts."""

    t: float = Field(description="seconds since traffic started")
    status: str
    value: float | None
    samples: dict[str, float | None]


class AARule(BaseModel):
    """A (minimum samples, N consecutive readings) pair applied to one gate's A/A readings."""

    gate: str
    min_samples: int
    n: int
    firing_share: float = Field(description="share of readings that fire with the minimum (N ignored)")
    unknown_share: float = Field(description="share of readings the minimum turns into unknown (blind time)")
    starts: float = Field(description="cycles that would start over the run (mean over read phases)")
    starts_per_hour: float


class AAGate(BaseModel):
    readings: int
    firing_raw: float = Field(description="share of readings firing on the value alone (no minimum, N = 1)")
    firing_raw_steady: float | None = Field(description="the same once both windows are full (t >= W + B)")
    first_fire_s: float | None = Field(description="first firing reading, seconds after traffic started")
    firing_profile: float = Field(description="share firing with the profile's minimum")
    starts_profile: float = Field(description="cycles started over the run with the profile's minimum and N")


class AABench(BaseModel):
    env: str
    model: str
    dataset: str
    rate: float
    seconds: float
    read_every_s: float = Field(description="how often the bench read the gates")
    cadence_s: float = Field(description="the scheduler's reading interval the N rule is applied at (profile)")
    window_s: int
    baseline_window_s: int
    profile_min_samples: dict[str, int]
    profile_n: int
    requests: int = 0
    feedback: int = 0
    gates: dict[str, AAGate] = Field(default_factory=dict)
    sweep: list[AARule] = Field(default_factory=list)
    wall_s: float = 0.0

    def render(self) -> str:
        lines = [f"gates A/A ({self.env}: window {self.window_s}s, baseline {self.baseline_window_s}s; {self.model} "
                 f"over {self.dataset} at {self.rate:g} req/s for {self.seconds:g}s: {self.requests} requests, "
                 f"{self.feedback} feedback; read every {self.read_every_s:g}s, N applied every {self.cadence_s:g}s)",
                 f"{'gate':12s} {'fire raw':>8s} {'steady':>6s} {'first s':>7s} {'fire min':>8s} {'starts':>6s}  "
                 f"(profile: min {self.profile_min_samples}, N {self.profile_n})"]
        for name, g in self.gates.items():
            steady = "-" if g.firing_raw_steady is None else f"{g.firing_raw_steady:.1%}"
            lines.append(f"{name:12s} {g.firing_raw:8.1%} {steady:>6s} {_fmt(g.first_fire_s):>7s} "
                         f"{g.firing_profile:8.1%} {g.starts_profile:6.1f}")
        lines.append(f"{'gate':12s} {'min':>4s} {'fire':>6s} {'unknown':>7s}  cycle starts over the run, N = "
                     + " ".join(f"{n:>4d}" for n in N_GRID))
        rows: dict[tuple[str, int], list[AARule]] = {}
        for r in self.sweep:
            rows.setdefault((r.gate, r.min_samples), []).append(r)
        for (gate, minimum), rs in rows.items():
            lines.append(f"{gate:12s} {minimum:4d} {rs[0].firing_share:6.1%} {rs[0].unknown_share:7.1%}  "
                         f"{'':30s} " + " ".join(f"{r.starts:4.1f}" for r in rs))
        lines.append(f"wall {self.wall_s:.0f} s")
        return "\n".join(lines)


def with_minimum(r: AAReading, minimum: int) -> str:
    """The reading's status once `minimum` applies: unknown if any count is missing or below it."""
    if r.status == "unknown":
        return "unknown"
    counts = list(r.samples.values())
    return "unknown" if any(c is None or c < minimum for c in counts) else r.status


def count_starts(statuses: list[str], n: int) -> int:
    """Cycles a scheduler would start: one each time a gate reaches n firing readings in a row (then it resets)."""
    streak = starts = 0
    for s in statuses:
        streak = streak + 1 if s == "firing" else 0
        if streak >= n:
            starts += 1
            streak = 0
    return starts


def judge_rule(gate: str, readings: list[AAReading], minimum: int, n: int, stride: int, seconds: float) -> AARule:
    """Apply (minimum, n) to one gate's readings; the N rule runs on every `stride`-th reading (the scheduler's
    cadence), averaged over the `stride` possible phases."""
    statuses = [with_minimum(r, minimum) for r in readings]
    total = max(1, len(statuses))
    raw_unknown = sum(r.status == "unknown" for r in readings)
    starts = sum(count_starts(statuses[k::stride], n) for k in range(stride)) / stride
    return AARule(gate=gate, min_samples=minimum, n=n, firing_share=round(statuses.count("firing") / total, 4),
                  unknown_share=round((statuses.count("unknown") - raw_unknown) / total, 4), starts=round(starts, 2),
                  starts_per_hour=round(3600 * starts / max(seconds, 1e-9), 1))


def summarise_aa(out: AABench, readings: dict[str, list[AAReading]], profile: Any) -> AABench:
    """Fill `gates` (profile rules) and `sweep` (the grids) from the recorded readings."""
    stride = max(1, round(out.cadence_s / out.read_every_s))
    mins = profile.gates.min_samples.model_dump()
    for name, rs in readings.items():
        total = max(1, len(rs))
        fired = [r.t for r in rs if r.status == "firing"]
        steady = [r for r in rs if r.t >= out.window_s + out.baseline_window_s]
        mine = judge_rule(name, rs, mins[name], out.profile_n, stride, out.seconds)
        out.gates[name] = AAGate(readings=len(rs), firing_raw=round(len(fired) / total, 4),
                                 firing_raw_steady=round(sum(r.status == "firing" for r in steady) / len(steady), 4)
                                 if steady else None,
                                 first_fire_s=round(fired[0], 1) if fired else None,
                                 firing_profile=mine.firing_share, starts_profile=mine.starts)
        out.sweep += [judge_rule(name, rs, m, n, stride, out.seconds) for m in MIN_GRID[name] for n in N_GRID]
    return out


def _aa_model(model: str | None) -> str:
    """The model to serve: the given version, else `aa-bm25` (BM25 only: no encoder, cheap on a CPU)."""
    from autooptimizer.search import model_store
    from autooptimizer.search.model_store import ModelSpec

    if model:
        return model
    if not model_store.exists("aa-bm25"):
        model_store.save(ModelSpec(version="aa-bm25", kind="bm25", fusion_weight=0.0, rerank_depth=50,
                                   notes="BM25 only, for `autoopt bench gates --aa`"))
    return "aa-bm25"


def run_aa_bench(
    seconds: float = 240.0,
    rate: float = 2.0,
    env: str | None = None,
    model: str | None = None,
    dataset: str = "scifact",
    split: str | None = "train",
    max_queries: int | None = None,
    read_every_s: float = 1.0,
    progress: bool = True,
) -> AABench:
    """Unchanged traffic (no shift, no fault) from a freshly started service: read every gate every `read_every_s`
    (value judged alone, counts recorded), then apply the minimum-sample and N-consecutive rules offline."""
    from autooptimizer.gates import gate_queries, read_gate
    from autooptimizer.infra.stack import LocalStack
    from autooptimizer.profiles import load_profile
    from autooptimizer.settings import get_settings
    from autooptimizer.simulator import Scenario, Simulator, load_workload

    say = print if progress else (lambda *_a, **_k: None)
    profile = load_profile(env or get_settings().env)
    g = profile.gates
    version = _aa_model(model)
    t_start = time.monotonic()
    out = AABench(env=profile.name, model=version, dataset=dataset, rate=rate, seconds=seconds,
                  read_every_s=read_every_s, cadence_s=g.read_interval_seconds, window_s=g.window_seconds,
                  baseline_window_s=g.baseline_window_seconds, profile_min_samples=g.min_samples.model_dump(),
                  profile_n=g.consecutive_readings)
    readings: dict[str, list[AAReading]] = {q.name: [] for q in gate_queries(profile)}
    say(f"starting the stack ({version} over {dataset}, a fresh Prometheus) ...")
    # A fresh TSDB: an earlier run's series (another instance label, same metric) would fill the first baseline.
    tmp = tempfile.TemporaryDirectory(prefix="autoopt-aa-")
    stack = LocalStack(service="process", serve_args=["--datasets", dataset, "--model", version], profile=profile,
                       root=Path(tmp.name) / "prometheus")
    sim = None
    try:
        stack.start()
        workload = load_workload([dataset], split=split, max_queries=max_queries)
        scenario = Scenario(datasets=[dataset], rate=rate, duration=seconds + 30, split=split, max_queries=max_queries)
        sim = Simulator(scenario, stack.search_url, workload=workload).start()
        t0 = time.monotonic()
        say(f"A/A: {rate:g} req/s, no shift, no fault, for {seconds:g} s; reading the gates every {read_every_s:g} s")
        while (t := time.monotonic() - t0) < seconds:
            for q in gate_queries(profile):
                gate = read_gate(q, stack.prometheus_url, check_counts=False)
                readings[q.name].append(AAReading(t=round(t, 2), status=gate.status, value=gate.value,
                                                  samples=gate.evidence.samples))
            time.sleep(max(0.0, read_every_s - (time.monotonic() - t0 - t)))
        sim.stop()
        stats = sim.join(30)  # after the last request's feedback
        out.requests, out.feedback = stats.sent, stats.feedback_ok
    finally:
        if sim is not None:
            sim.stop()
            sim.join(30)
        stack.stop()
        tmp.cleanup()
    out.wall_s = round(time.monotonic() - t_start, 1)
    return summarise_aa(out, readings, profile)
