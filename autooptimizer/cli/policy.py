"""CLI commands for the policy area."""

from __future__ import annotations

import typer


def register(app: typer.Typer, bench: typer.Typer) -> None:
    """Add this area's commands to the root app and its benchmarks to `autoopt bench`."""
