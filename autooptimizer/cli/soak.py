"""CLI: `autoopt soak` — a scenario's timeline played unattended against the whole stack, measured and reported."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer, bench: typer.Typer) -> None:
    """Add `autoopt soak` to the root app."""
    app.command("soak")(soak)


def soak(
    scenario: str = typer.Option("month", help="a scenario YAML file, or a packaged one: month, untuned, ci"),
    env: str = typer.Option("prod", help="the environment profile (its scheduler must be on: prod or staging)"),
    speed: float = typer.Option(None, help="simulated seconds per wall second (default: the scenario's)"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON on stdout"),
    run_dir: Path = typer.Option(None, help="the run's folder (default AUTOOPT_HOME/soak/<scenario>-<time>)"),
    start_from: str = typer.Option("gold", help="gold: serve gold at the start; current: git's desired state"),
    tiny_data: bool = typer.Option(False, help="write the tiny datasets and a bm25 champion first (the ci scenario)"),
    sample_seconds: float = typer.Option(10.0, help="wall seconds per traffic window"),
    resource_seconds: float = typer.Option(30.0, help="wall seconds between disk/RSS samples"),
    no_evaluate: bool = typer.Option(False, "--no-evaluate", help="skip the end-of-run offline evaluations"),
) -> None:
    """Play a scenario (traffic phases, shifts, faults, operator events) against Prometheus, the search service and
    the optimizer service it starts; the scheduler and the gates run every cycle. Writes soak_report.json and
    soak_report.html in the run's folder; exits 1 when an invariant fails."""
    from autooptimizer.soak.harness import SoakHarness, SoakOptions
    from autooptimizer.soak.report import write_report
    from autooptimizer.soak.scenario import load_scenario

    sc = load_scenario(scenario, check_data=not tiny_data)
    opts = SoakOptions(env=env, speed=speed, run_dir=run_dir, start_from=start_from,  # type: ignore[arg-type]
                       tiny_data=tiny_data, sample_seconds=sample_seconds, resource_seconds=resource_seconds,
                       evaluate=not no_evaluate)
    rec = SoakHarness(sc, opts).run()
    report, json_path, html_path = write_report(rec)
    if as_json:
        typer.echo(json.dumps({k: v for k, v in report.items() if k not in ("traffic", "resources")}, indent=1,
                              default=str))
    failed = [k for k, v in report["invariants"].items() if not v["pass"]]
    typer.echo(f"report: {json_path}\n        {html_path}", err=True)
    typer.echo(("all invariants hold" if report["ok"] else f"FAILED: {', '.join(failed) or report['error']}"),
               err=True)
    raise typer.Exit(0 if report["ok"] else 1)
