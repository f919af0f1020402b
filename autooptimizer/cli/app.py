"""Builds the `autoopt` Typer app. Area modules import only light code at module level,
so `autoopt --help` answers fast; heavy libraries are imported inside the commands."""

from __future__ import annotations

import sys

import typer

from autooptimizer.errors import AutoOptError

app = typer.Typer(
    name="autoopt",
    help="AutoOptimizer: monitor, diagnose, retrain and safely redeploy a search reranker.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
bench_app = typer.Typer(help="Benchmarks that print figures (recorded in docs/benchmarks.md).", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


def _register_areas() -> None:
    from autooptimizer.cli import agents, infra, llm, loop, ml, policy, reliability, search, soak

    for area in (search, infra, policy, ml, agents, llm, loop, reliability, soak):
        area.register(app, bench_app)


_register_areas()


def main() -> None:
    """Entry point: AutoOptErrors print their problem and fix instead of a traceback."""
    from autooptimizer.settings import apply_offline_env

    apply_offline_env()
    try:
        app()
    except AutoOptError as exc:
        typer.secho(f"error: {exc.problem}", fg="red", err=True)
        if exc.fix:
            typer.secho(f"fix: {exc.fix}", err=True)
        sys.exit(2)
