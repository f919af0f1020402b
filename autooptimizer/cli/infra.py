"""CLI commands for the infra area: `infra up|down|status`, `gates`, `simulate`, `demo`, `bench gates`.

Only typer/stdlib at module level; everything else is imported inside the commands (fast `autoopt --help`).
"""

from __future__ import annotations

import json

import typer

infra_app = typer.Typer(help="The local Prometheus: start, stop, inspect.", no_args_is_help=True)

FAULTS = ("latency", "errors", "cost", "retries")


def _print_json(obj: object) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


@infra_app.command("up")
def infra_up(
    port: int | None = typer.Option(None, help="listen port (default AUTOOPT_PROMETHEUS_PORT)"),
    env: str | None = typer.Option(None, help="profile for the gate rules (default AUTOOPT_ENV)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Start Prometheus on 127.0.0.1 (1 s scrape of the search service and the optimizer API, gate rules)."""
    from autooptimizer.infra import prometheus

    state = prometheus.up(port=port, env=env)
    if as_json:
        _print_json(state.model_dump())
    else:
        typer.echo(f"prometheus running: pid {state.pid}, {state.url}, state in {state.root}")


@infra_app.command("down")
def infra_down(as_json: bool = typer.Option(False, "--json")) -> None:
    """Stop the Prometheus that `infra up` started."""
    from autooptimizer.infra import prometheus

    state = prometheus.down()
    _print_json(state.model_dump()) if as_json else typer.echo("prometheus stopped")


@infra_app.command("status")
def infra_status(as_json: bool = typer.Option(False, "--json")) -> None:
    """Is Prometheus running, where, and are its targets up."""
    from autooptimizer.infra import prometheus

    state = prometheus.status()
    if as_json:
        _print_json(state.model_dump())
        return
    running = f"running (pid {state.pid})" if state.running else "stopped"
    typer.echo(f"prometheus: {running} at {state.url}")
    for target, health in state.scrape_health.items():
        typer.echo(f"  {target}: {health}")


gates_app = typer.Typer(help="The four quality gates now, and the NDCG gate's anchor.", invoke_without_command=True)


@gates_app.callback()
def gates_cmd(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="print {gates: [...]} as JSON"),
    prometheus_url: str | None = typer.Option(None, "--prometheus-url", help="default AUTOOPT_PROMETHEUS_URL"),
    env: str | None = typer.Option(None, "--env", help="profile for thresholds (default AUTOOPT_ENV)"),
) -> None:
    """Evaluate the four quality gates now: ok | firing | unknown, with PromQL evidence (the NDCG gate also against
    the loop's anchor: `autoopt gates anchor`)."""
    if ctx.invoked_subcommand is not None:
        return
    from autooptimizer.gates import evaluate_gates
    from autooptimizer.loop.anchor import AnchorStore
    from autooptimizer.settings import get_settings

    report = evaluate_gates(prometheus_url=prometheus_url, env=env,
                            anchor=AnchorStore.for_settings(get_settings()).read())
    if as_json:
        _print_json(report.public())
        return
    from rich.console import Console

    from autooptimizer.demo import gates_table

    Console().print(gates_table(report))


@gates_app.command("anchor")
def gates_anchor_cmd(
    reset: bool = typer.Option(False, "--reset", help="accept the level served now: re-anchor at the next healthy "
                                                       "reading (audited)"),
    by: str | None = typer.Option(None, "--by", help="who resets (default: the OS user)"),
    reason: str = typer.Option("", "--reason"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Show the NDCG gate's anchor (the champion's online NDCG@10 on healthy traffic); --reset re-anchors."""
    from autooptimizer.cli.policy import _user
    from autooptimizer.loop.anchor import AnchorStore
    from autooptimizer.settings import get_settings

    store = AnchorStore.for_settings(get_settings())
    if reset:
        store.reset(by or _user(), reason)
    doc = store.describe()
    if as_json:
        _print_json(doc)
        return
    if reset:
        typer.echo(f"NDCG anchor reset for {doc['champion']}: the next healthy reading of the scheduler sets it")
    typer.echo(f"{doc['state']}: {doc['note']}")


def simulate_cmd(
    datasets: str = typer.Option("scifact", help="comma-separated datasets (names under AUTOOPT_DATA_DIR or paths)"),
    shift_to: str | None = typer.Option(None, "--shift-to", help="dataset the query mix moves to"),
    shift_at: float = typer.Option(0.0, "--shift-at", help="seconds after start (0 = immediately)"),
    rate: float = typer.Option(10.0, help="requests per second"),
    duration: float = typer.Option(60.0, help="seconds (at most 3600)"),
    max_requests: int | None = typer.Option(None, "--max-requests"),
    fault: str | None = typer.Option(None, help="latency | errors | cost | retries"),
    fault_at: float = typer.Option(0.0, "--fault-at"),
    fault_duration: float = typer.Option(30.0, "--fault-duration"),
    split: str = typer.Option("train", help="query split where a dataset has splits"),
    target: str | None = typer.Option(None, help="search service URL (loopback only; default settings)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Replay judged queries against the search service at a fixed rate and post their qrels as feedback."""
    from autooptimizer.errors import InputError
    from autooptimizer.settings import get_settings
    from autooptimizer.simulator import FaultSpec, Scenario, Simulator

    if fault is not None and fault not in FAULTS:
        raise InputError(f"Unknown fault {fault!r}.", f"Use one of {', '.join(FAULTS)}.")
    scenario = Scenario(
        datasets=[d.strip() for d in datasets.split(",") if d.strip()],
        shift_to=shift_to, shift_at=shift_at, rate=rate, duration=duration, max_requests=max_requests,
        split=split or None,
        fault=FaultSpec(kind=fault, at=fault_at, duration=fault_duration) if fault else None,  # type: ignore[arg-type]
    )
    sim = Simulator(scenario, target or get_settings().search_url)
    if as_json:
        _print_json(sim.run().model_dump())
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                  TimeRemainingColumn()) as progress:
        task = progress.add_task("simulating", total=scenario.max_requests, info="")

        def tick(s: object) -> None:
            st = sim.snapshot()
            progress.update(task, completed=st.sent + st.dropped,
                            info=f"ok {st.ok} err {st.errors} mix {'+'.join(st.active)} p95 {st.p95_ms or 0:.0f} ms")

        stats = sim.run(on_tick=tick)
    typer.echo(json.dumps(stats.model_dump(exclude={"faults"}), default=str))


def demo_cmd(
    datasets: str = typer.Option("scifact", help="datasets the healthy traffic replays"),
    shift_to: str = typer.Option("cran", "--shift-to", help="dataset the traffic shifts to"),
    rate: float = typer.Option(10.0, help="requests per second"),
    timeout: float = typer.Option(240.0, help="give up waiting for a phase after this many seconds"),
    model: str | None = typer.Option(None, help="model version to serve (default: the champion; bootstrapped)"),
    gate_only: bool = typer.Option(False, "--gate-only", help="stop after the NDCG gate fires (no repair cycles)"),
    as_json: bool = typer.Option(False, "--json", help="print the phase record as JSON at the end"),
) -> None:
    """The main job: shift the traffic, watch the NDCG gate fire, repair it with a full cycle (challenger, A/B,
    GitOps promotion), then roll back a deliberately bad promotion. Stops everything it started."""
    from autooptimizer.demo import DemoOptions, run_demo

    opts = DemoOptions(datasets=[d for d in datasets.split(",") if d], shift_to=shift_to, rate=rate,
                       phase_timeout=timeout, model=model)
    extra = None
    if not gate_only:
        from autooptimizer.loop.demo_phases import LOOP_PHASES

        extra = LOOP_PHASES
    result = run_demo(opts, live=not as_json, extra_phases=extra)
    if as_json:
        _print_json(result.model_dump())
    else:
        for phase in result.phases:
            typer.echo(f"{phase.name:10s} {phase.status:7s} {phase.seconds:7.1f} s")
    if not result.ok:
        typer.secho(f"demo failed: {result.error}", fg="red", err=True)
        raise typer.Exit(130 if result.error == "interrupted" else 1)


def bench_gates_cmd(
    trials: int = typer.Option(3, min=1, max=20, help="injections per gate"),
    model: str | None = typer.Option(None, help="model version to serve (default: the champion; with --aa a "
                                                "BM25-only `aa-bm25`)"),
    rate: float | None = typer.Option(None, help="simulator requests per second (default 10; with --aa 2)"),
    latency_seconds: float = typer.Option(30.0, "--latency-seconds", help="length of the p95 measurement"),
    aa: bool = typer.Option(False, "--aa", help="A/A instead: unchanged traffic, count the readings that fire"),
    aa_seconds: float = typer.Option(240.0, "--aa-seconds", min=10, max=1800, help="length of the A/A run"),
    dataset: str = typer.Option("scifact", help="A/A: the dataset served and replayed (train split)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Time from fault injection to each gate firing (p50 target < 15 s) and the service's p95 at 10 req/s; with
    --aa, the false-alarm share of each gate under unchanged traffic, per minimum-sample and N-consecutive rule."""
    if aa:
        from autooptimizer.infra.bench import run_aa_bench

        aa_result = run_aa_bench(seconds=aa_seconds, rate=rate or 2.0, model=model, dataset=dataset,
                                 progress=not as_json)
        if as_json:
            _print_json(aa_result.model_dump())
        else:
            typer.echo(aa_result.render())
        return
    from autooptimizer.infra.bench import run_gates_bench

    result = run_gates_bench(trials=trials, rate=rate or 10.0, latency_seconds=latency_seconds, model=model,
                             progress=not as_json)
    if as_json:
        _print_json(result.model_dump())
    else:
        typer.echo(result.render())


def register(app: typer.Typer, bench: typer.Typer) -> None:
    """Add this area's commands to the root app and its benchmarks to `autoopt bench`."""
    app.add_typer(infra_app, name="infra")
    app.add_typer(gates_app, name="gates")
    app.command("simulate")(simulate_cmd)
    app.command("demo")(demo_cmd)
    bench.command("gates")(bench_gates_cmd)
