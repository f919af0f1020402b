"""`autoopt demo`: the gate part of the loop, live in the terminal.

Phases (each recorded as a `DemoPhase`):
  champion  the model to serve: the `gold` baseline (the bootstrapped champion; a rerun starts from it again), or
            build it with the search bootstrap (minutes, once)
  stack     start the local stack: the search service (scifact + cran collection) and a real Prometheus; the
            service answers at once with BM25 alone while it embeds the documents still missing (cran's, on a
            first run) and swaps to the champion when every vector exists
  healthy   replay SciFact train queries with feedback until the service serves the champion and the NDCG gate
            reads `ok` steadily (its baseline holds a whole pass over the queries; the embedding of the shift
            domain overlaps this wait); cran's traffic will be only the feedback half of its judged
            queries (ml/pipeline_data.py's seeded split): the other half is the fix cycle's offline holdout
  shift     move the query mix to cran and wait for the NDCG gate to fire
  ...       extra phases (`run_demo(..., extra_phases=[...])`) run here, while the stack is still up
  stop      stop the simulator, the service and Prometheus (also on Ctrl-C and on errors)

Later issues extend the cycle by passing extra phases: each is `fn(ctx: DemoContext) -> DemoPhase`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from autooptimizer.errors import AutoOptError, InputError
from autooptimizer.gates import Gate, GateReport

STATUS_STYLE = {"ok": "green", "firing": "bold red", "unknown": "yellow"}


class DemoOptions(BaseModel):
    datasets: list[str] = Field(default_factory=lambda: ["scifact"])
    shift_to: str = "cran"
    rate: float = Field(default=10.0, gt=0, le=100)
    max_queries: int = Field(default=100, ge=1, description="replay this many judged queries per dataset, in cycles")
    phase_timeout: float = Field(default=240.0, gt=0)
    hold_seconds: float = Field(default=8.0, ge=0,
                                description="keep watching the firing gate this long before stopping")
    healthy_ok_polls: int = Field(default=3, ge=1, description="consecutive `ok` readings that end the healthy phase")
    ab_min_samples: int = Field(default=100, ge=2,
                                description="the fix cycle's A/B samples per arm: per-request NDCG@10 "
                                "varies ~0.3 between queries, so a +0.15 live gain needs ~100 per arm to show")
    env: str | None = None
    model: str | None = Field(default=None, description="model version to serve (default: the champion alias)")
    seed: int = 0


class DemoPhase(BaseModel):
    name: str
    status: Literal["ok", "failed", "skipped"] = "ok"
    seconds: float = 0.0
    detail: dict[str, Any] = Field(default_factory=dict)


class DemoResult(BaseModel):
    ok: bool = False
    phases: list[DemoPhase] = Field(default_factory=list)
    timeline: list[dict[str, Any]] = Field(default_factory=list, description="[{t, phase, gates: {name: status}}]")
    stack: dict[str, Any] | None = None
    error: str | None = None
    cycles: list[dict[str, Any]] = Field(default_factory=list, description="[{id, outcome, artifacts_dir}]")


def gates_table(report: GateReport) -> Any:
    """A rich table of the four gates (also used by `autoopt gates` without --json)."""
    from rich.table import Table

    table = Table(title=f"quality gates ({report.env}) @ {report.prometheus_url}", expand=False)
    for col in ("gate", "status", "value", "threshold", "note"):
        table.add_column(col)
    for g in report.gates:
        value = "-" if g.value is None else f"{g.value:.2f}"
        note = g.evidence.error or _anchor_note(g)
        table.add_row(g.name, f"[{STATUS_STYLE[g.status]}]{g.status}[/]", value, f"{g.threshold:g} {g.unit}",
                      note[:60])
    return table


def _anchor_note(g: Gate) -> str:
    """ndcg_drop's two comparisons in a few words ('sliding 0.4 %, anchored 45.7 % vs 0.7012')."""
    a = g.evidence.anchor
    if a is None:
        return ""
    sliding = "-" if a.sliding_drop is None else f"{a.sliding_drop:.1f} %"
    if a.anchored_drop is not None and a.anchor_ndcg10 is not None:
        return f"sliding {sliding}, anchored {a.anchored_drop:.1f} % vs {a.anchor_ndcg10:.4f}"
    return f"sliding only ({a.state.replace('_', ' ')})"


@dataclass
class DemoContext:
    """What a phase can use: the running stack and simulator, the options, the result so far."""

    opts: DemoOptions
    result: DemoResult
    profile: Any = None
    stack: Any = None
    sim: Any = None
    report: GateReport | None = None
    phase: str = ""
    log: list[str] = field(default_factory=list)
    t0: float = field(default_factory=time.monotonic)
    shifted_at: float | None = None  # monotonic time of the corpus shift (the loop phases time from it)
    echo: bool = False  # without the live display (--json), progress lines go to stderr as they happen

    def say(self, msg: str) -> None:
        line = f"[{time.monotonic() - self.t0:6.1f}s] {msg}"
        self.log.append(line)
        del self.log[:-8]
        if self.echo:
            print(line, file=sys.stderr, flush=True)

    def gates(self) -> GateReport:
        from autooptimizer.gates import evaluate_gates

        self.report = evaluate_gates(prometheus_url=self.stack.prometheus_url, profile=self.profile)
        self.result.timeline.append({
            "t": round(time.monotonic() - self.t0, 2), "phase": self.phase,
            "gates": {g.name: g.status for g in self.report.gates},
            "ndcg_drop_pct": self.report.gate("ndcg_drop").value,
        })
        return self.report

    def wait_gate(self, name: str, status: str, timeout: float) -> tuple[bool, float]:
        """Poll the gates every second until `name` reads `status`; returns (reached, seconds)."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.gates().gate(name).status == status:
                return True, time.monotonic() - start
            time.sleep(1.0)
        return False, time.monotonic() - start


def _last_line(path: Any) -> str:
    """The last progress line of a log (tqdm writes carriage returns), for the live display."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            fh.seek(max(0, fh.tell() - 2000))
            tail = fh.read().decode(errors="replace")
    except OSError:
        return ""
    pieces = [p.strip() for p in tail.replace("\r", "\n").split("\n") if p.strip()]
    return pieces[-1][:110] if pieces else ""


class _View:
    """Rendered on every refresh of the live display, so it stays current during blocking calls."""

    def __init__(self, ctx: DemoContext) -> None:
        self.ctx = ctx

    def __rich__(self) -> Any:
        from rich.console import Group
        from rich.panel import Panel
        from rich.text import Text

        ctx = self.ctx
        parts: list[Any] = [Text(f"phase: {ctx.phase}   elapsed {time.monotonic() - ctx.t0:5.0f} s", style="bold")]
        if ctx.report is not None:
            parts.append(gates_table(ctx.report))
        if ctx.sim is not None:
            s = ctx.sim.snapshot()
            ndcg = " ".join(f"{d}={v:.3f}" for d, v in s.ndcg_by_dataset.items())
            parts.append(Text(f"traffic: mix={'+'.join(s.active)} sent={s.sent} ok={s.ok} err={s.errors} "
                              f"p95={s.p95_ms or 0:.0f} ms  served NDCG@10 {ndcg}"))
        lines = list(ctx.log)
        if ctx.phase in ("stack", "healthy") and ctx.stack is not None:
            lines.append("service: " + _last_line(ctx.stack.service_log))
        parts.append(Panel("\n".join(lines) or "...", title="log", expand=False))
        return Group(*parts)


def _phase_champion(ctx: DemoContext) -> DemoPhase:
    from autooptimizer.search import aliases

    if ctx.opts.model:
        return DemoPhase(name="champion", detail={"version": ctx.opts.model, "source": "option"})
    version = aliases.get_alias(aliases.GOLD) or aliases.get_alias(aliases.CHAMPION)
    if version:  # a rerun starts from the bootstrapped baseline again, not from an earlier run's promoted fix
        champion = aliases.get_alias(aliases.CHAMPION)
        ctx.say(f"baseline {version}" + (f" (champion is {champion})" if champion and champion != version else ""))
        return DemoPhase(name="champion", detail={"version": version, "source": "gold alias", "champion": champion})
    ctx.say("no champion yet: running the bootstrap (SciFact train; minutes on this CPU)")
    from autooptimizer.search.bootstrap import bootstrap

    res = bootstrap(progress=False, log=ctx.say)
    return DemoPhase(name="champion", detail={"version": res.version, "source": "bootstrap",
                                              "test_ndcg10": res.test_ndcg10})


def _phase_stack(ctx: DemoContext) -> DemoPhase:
    from autooptimizer.infra.stack import LocalStack

    version = ctx.result.phases[-1].detail["version"]
    datasets = list(dict.fromkeys([*ctx.opts.datasets, ctx.opts.shift_to]))
    ctx.say(f"starting the search service over {'+'.join(datasets)} (BM25 alone while new documents embed)")
    ctx.stack = LocalStack(service="process", profile=ctx.profile,
                           serve_args=["--datasets", ",".join(datasets), "--model", version, "--background"])
    ctx.stack.start()
    stack = ctx.result.stack = ctx.stack.info().model_dump()
    ctx.say(f"service {ctx.stack.search_url}, prometheus {ctx.stack.prometheus_url}")
    return DemoPhase(name="stack", detail=stack)


def demo_workload(o: DemoOptions) -> Any:
    """The simulator's queries: `max_queries` judged train queries of each healthy dataset, and of the shift target
    only its feedback half (ml/pipeline_data.py's seeded split): the other half is the fix cycle's offline holdout,
    so the traffic never serves it and training never sees it."""
    from autooptimizer.ml.pipeline_data import domain_split
    from autooptimizer.simulator import Workload, load_workload

    healthy = load_workload(o.datasets, split="train", max_queries=o.max_queries, seed=o.seed)
    if o.shift_to in healthy.queries:
        return healthy
    shifted = load_workload([o.shift_to], split="train", seed=o.seed)
    try:
        keep = set(domain_split(o.shift_to, o.seed)[0])
    except InputError:  # too few judged queries to hold any out: replay them all (a fix cycle would refuse)
        return Workload(queries={**healthy.queries, **shifted.queries})
    return Workload(queries={**healthy.queries, **{name: [q for q in qs if q.query_id in keep]
                                                   for name, qs in shifted.queries.items()}})


def champion_served(ctx: DemoContext, version: str) -> tuple[bool, str | None]:
    """(the service serves `version`, why it never will): its background embedding may still be running."""
    import httpx

    state = httpx.get(ctx.stack.search_url + "/admin/state", timeout=10).json()
    warming = state.get("warming") or {}
    if warming.get("error"):
        return False, f"the service could not embed the documents of {version}: {warming['error']}"
    return (state.get("stable") or {}).get("version") == version, None


def _phase_healthy(ctx: DemoContext) -> DemoPhase:
    """Healthy traffic until the service serves the champion (on a first run it embeds the shift domain
    meanwhile, answering with BM25 alone) and the NDCG gate's reading is trustworthy: `ok`, with the baseline window
    holding at least one whole pass over the replayed queries (the gate reads `unknown`, then a noisy value while its
    baseline holds a few seconds only: a 2-3 % 'drop' against a 3 % threshold was seen), for `healthy_ok_polls`
    readings in a row. BM25-era samples in the baseline only lower it (BM25 ranks below the champion), so they
    cannot make the later shift look smaller than 3 %: cran's drop is ~35 %."""
    from autooptimizer.simulator import Scenario, Simulator

    o = ctx.opts
    version = next(p for p in ctx.result.phases if p.name == "champion").detail["version"]
    scenario = Scenario(datasets=o.datasets, shift_to=None, rate=o.rate, duration=3600, max_queries=o.max_queries,
                        seed=o.seed)
    ctx.sim = Simulator(scenario, ctx.stack.search_url, workload=demo_workload(o)).start()
    ctx.say(f"replaying {'+'.join(o.datasets)} at {o.rate:g} req/s with feedback; waiting for the NDCG baseline")
    healthy = [Path(d).name for d in o.datasets]
    one_pass = max(len(qs) for name, qs in ctx.sim.workload.queries.items() if name in healthy) / o.rate
    settle = ctx.profile.gates.window_seconds + one_pass + 2.0
    start = time.monotonic()
    streak, reached, served_at, why = 0, False, None, None
    while why is None:
        now = time.monotonic()
        if served_at is None:
            served, why = champion_served(ctx, version)
            if served:
                served_at = now
                ctx.say(f"the service serves {version} ({now - start:.0f} s into the healthy phase)")
            elif why is None and now - start > ctx.stack.service_timeout:
                why = f"the service did not serve {version} within {ctx.stack.service_timeout:g} s"
        elif now - served_at > o.phase_timeout:
            break
        status = ctx.gates().gate("ndcg_drop").status
        streak = streak + 1 if status == "ok" else 0
        if served_at is not None and streak >= o.healthy_ok_polls and now - start >= settle:
            reached = True
            break
        time.sleep(1.0)
    secs = time.monotonic() - start
    detail = {"ndcg_gate": ctx.report.gate("ndcg_drop").model_dump() if ctx.report else None,
              "settle_s": round(settle, 1), "ok_polls": streak,
              "champion_served_after_s": None if served_at is None else round(served_at - start, 1)}
    if why:
        detail["reason"] = why
    return DemoPhase(name="healthy", status="ok" if reached else "failed", seconds=secs, detail=detail)


def _phase_shift(ctx: DemoContext) -> DemoPhase:
    ctx.sim.shift(ctx.opts.shift_to)
    ctx.shifted_at = time.monotonic()
    ctx.say(f"corpus shift: the query mix moves to {ctx.opts.shift_to}")
    reached, secs = ctx.wait_gate("ndcg_drop", "firing", ctx.opts.phase_timeout)
    gate = ctx.report.gate("ndcg_drop") if ctx.report else None
    if reached and gate is not None:
        ctx.say(f"NDCG gate FIRING after {secs:.1f} s: drop {gate.value:.1f}% >= {gate.threshold:g}%")
        hold_until = time.monotonic() + ctx.opts.hold_seconds
        while time.monotonic() < hold_until:
            time.sleep(1.0)
            ctx.gates()
    return DemoPhase(name="shift", status="ok" if reached else "failed", seconds=secs,
                     detail={"time_to_fire_s": round(secs, 2), "ndcg_gate": gate.model_dump() if gate else None})


Phase = Callable[[DemoContext], DemoPhase]
CORE_PHASES: list[Phase] = [_phase_champion, _phase_stack, _phase_healthy, _phase_shift]


def _stop(ctx: DemoContext) -> DemoPhase:
    t = time.monotonic()
    errors = []
    if ctx.sim is not None:
        ctx.sim.stop()
        stats = ctx.sim.join(30)
        ctx.result.timeline.append({"t": round(time.monotonic() - ctx.t0, 2), "phase": "stop",
                                    "traffic": stats.model_dump(exclude={"faults"})})
    if ctx.stack is not None:
        try:
            ctx.stack.stop()
        except Exception as exc:
            errors.append(str(exc))
    return DemoPhase(name="stop", status="failed" if errors else "ok", seconds=time.monotonic() - t,
                     detail={"errors": errors})


def run_demo(opts: DemoOptions | None = None, live: bool = True, extra_phases: list[Phase] | None = None) -> DemoResult:
    """Run the phases in order, stopping at the first failure; always stop what was started (on Ctrl-C and SIGTERM
    too: infra/interrupts.py)."""
    from autooptimizer.infra.interrupts import sigterm_interrupts

    with sigterm_interrupts():
        return _run_phases(opts, live, extra_phases)


def _run_phases(opts: DemoOptions | None, live: bool, extra_phases: list[Phase] | None) -> DemoResult:
    from autooptimizer.profiles import load_profile
    from autooptimizer.settings import get_settings

    opts = opts or DemoOptions()
    result = DemoResult()
    ctx = DemoContext(opts=opts, result=result, profile=load_profile(opts.env or get_settings().env), echo=not live)
    display: Any = None
    if live:
        from rich.live import Live

        display = Live(_View(ctx), refresh_per_second=4, transient=False)
        display.start()
    try:
        for fn in [*CORE_PHASES, *(extra_phases or [])]:
            ctx.phase = fn.__name__.removeprefix("_phase_")
            t = time.monotonic()
            phase = fn(ctx)
            phase.seconds = phase.seconds or round(time.monotonic() - t, 2)
            result.phases.append(phase)
            if phase.status == "failed":
                why = phase.detail.get("reason") or f"did not complete within {opts.phase_timeout:g} s"
                result.error = f"phase {phase.name} failed: {why}"
                break
        else:
            result.ok = True
    except KeyboardInterrupt:
        result.error = "interrupted"
    except AutoOptError:
        raise  # problem + fix, printed by the CLI (after the finally below stopped everything)
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        ctx.phase = "stop"
        ctx.say("stopping the simulator, the service and Prometheus")
        result.phases.append(_stop(ctx))
        if display is not None:
            display.stop()
    return result
