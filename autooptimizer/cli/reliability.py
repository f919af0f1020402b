"""CLI for the reliability fault suite: `autoopt bench faults [--quick] [--json]` (see docs/reliability.md)."""

from __future__ import annotations

import json

import typer


def bench_faults(
    as_json: bool = typer.Option(False, "--json", help="print the counts as JSON"),
    quick: bool = typer.Option(False, "--quick", help="crash only around each path's deployment change"),
    skip_api: bool = typer.Option(False, "--skip-api", help="leave out the API fuzz and load checks"),
) -> None:
    """Crash every cycle path at every checkpoint, inject faults mid-cycle, fuzz and load the API; print counts."""
    from autooptimizer.reliability.crash import run_crash_suite
    from autooptimizer.reliability.faults import run_fault_suite

    def say(line: str) -> None:
        if not as_json:
            typer.echo(line, err=True)

    points = _around_changes if quick else None
    crash = run_crash_suite(points=points, on_progress=lambda o: say(
        f"crash {o.path:<12} {o.point}#{o.occurrence:<2} {'consistent' if o.consistent else 'INCONSISTENT'} "
        f"({o.seconds:.1f} s) {'; '.join(o.problems)}"))
    faults = run_fault_suite(on_progress=lambda o: say(
        f"fault {o.fault:<18} -> {o.outcome:<16} {'safe' if o.safe else 'UNSAFE'} "
        f"{'clear' if o.clear_error else 'UNCLEAR'} ({o.seconds:.1f} s)"))
    result: dict[str, object] = {
        "crash_points": {"tried": crash.tried, "consistent": crash.consistent, "per_path": crash.per_path,
                         "inconsistent": [o.model_dump() for o in crash.outcomes if not o.consistent]},
        "faults": {"injected": faults.injected, "safe": faults.safe, "clear_errors": faults.clear,
                   "outcomes": [o.model_dump(include={"fault", "outcome", "safe", "clear_error", "note"})
                                for o in faults.outcomes]},
    }
    from autooptimizer.reliability.gate_fuzz import run_gate_fuzz

    gate = run_gate_fuzz()
    result["gate_fuzz"] = {**gate.model_dump(), "ok": gate.ok}
    say(f"gate fuzz: {gate.calls} calls, {gate.unhandled_exceptions} unhandled, "
        f"{gate.calls_without_audit_record} without an audit record")
    ok = crash.tried == crash.consistent and faults.injected == faults.safe == faults.clear and gate.ok
    if not skip_api:
        from autooptimizer.reliability.api_checks import run_api_fuzz, run_api_load

        fuzz, load = run_api_fuzz(), run_api_load()
        result["api_fuzz"], result["api_load"] = fuzz.model_dump(), load.model_dump()
        ok = ok and fuzz.ok and load.ok
    result["ok"] = ok
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        typer.echo(f"crash points: {crash.consistent}/{crash.tried} consistent; faults: {faults.safe}/"
                   f"{faults.injected} safe, {faults.clear} with a clear error" +
                   ("" if skip_api else f"; API fuzz and load: {'passed' if ok else 'FAILED'}"))
    raise typer.Exit(0 if ok else 1)


def _around_changes(path: str, points: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """The quick subset: the points inside deploy/rollback units only."""
    return [(p, k) for p, k in points if ":after_" in p]


def register(app: typer.Typer, bench: typer.Typer) -> None:
    """Add this area's benchmark to `autoopt bench`."""
    bench.command("faults")(bench_faults)
