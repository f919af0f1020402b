"""`autoopt bench gates`: how fast each gate fires after its fault, and the service's p95 at 10 req/s.

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
import time
from typing import Any

from pydantic import BaseModel, Field

FAULT_FOR_GATE = {"p95_latency": "latency", "cost_budget": "cost", "retries": "retries", "ndcg_drop": "shift"}


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
        from autooptimizer.gates import query_metrics
        from autooptimizer.search import metric_names as m

        w = int(latency_seconds)
        prom = query_metrics(f"1000 * histogram_quantile(0.95, sum by (le) (rate({m.REQUEST_SECONDS}_bucket[{w}s])))",
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
