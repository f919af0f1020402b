"""CLI commands for the loop area: trigger, history, loop recover/show, serve, prune, helm render, bench loop."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

loop_app = typer.Typer(help="The optimization loop's journal: recover interrupted cycles, show one cycle.",
                       no_args_is_help=True)
helm_app = typer.Typer(help="Render, lint and validate the Helm chart offline with Helm's own SDK.",
                       no_args_is_help=True)


def _print(data: object) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def register(app: typer.Typer, bench: typer.Typer) -> None:
    """Add this area's commands to the root app and its benchmarks to `autoopt bench`."""
    app.add_typer(loop_app, name="loop")
    app.add_typer(helm_app, name="helm")

    @app.command()
    def trigger(
        gate: str = typer.Option(None, help="force a path: ndcg_drop|p95_latency|cost_budget|retries|deploy_watch"),
        challenger: str = typer.Option(None, help="A/B this existing model version instead of training one"),
        domain_data: str = typer.Option(None, help="the shifted domain (BEIR folder or name) to retrain on"),
        watch_seconds: float = typer.Option(None, help="post-promotion watch window (default: the profile's)"),
        as_json: bool = typer.Option(False, "--json", help="print the cycle as JSON"),
    ) -> None:
        """Run one optimization cycle now, in the foreground (refused while another cycle runs)."""
        from autooptimizer.loop.cycle import CycleOptions, CycleRunner, validate_gate

        def show(kind: str, data: dict) -> None:
            if not as_json and kind in ("step_start", "cycle_end"):
                typer.echo(f"[{data['cycle_id']}] {data.get('step') or data.get('outcome')}"
                           + (f": {data['reason']}" if data.get("reason") else ""), err=True)

        rec = CycleRunner(on_event=show).run(CycleOptions(trigger="cli", gate=validate_gate(gate),
                                                          challenger=challenger, domain_data=domain_data,
                                                          watch_seconds=watch_seconds))
        if as_json:
            _print({"id": rec.id, "outcome": rec.outcome, "status": rec.status, "artifacts_dir": rec.artifacts_dir,
                    "reason": rec.summary.get("reason"), "steps": [(s.name, s.status) for s in rec.steps]})
        else:
            typer.echo(f"{rec.id}: {rec.outcome} ({rec.summary.get('reason')}) -> {rec.artifacts_dir}")
        raise typer.Exit(0 if rec.status != "failed" else 1)

    @app.command()
    def history(limit: int = typer.Option(20, min=1, max=1000), as_json: bool = typer.Option(False, "--json")) -> None:
        """List recent cycles and their outcomes."""
        from autooptimizer.loop.journal import Journal
        from autooptimizer.settings import get_settings

        cycles = Journal(get_settings()).list(limit)
        if as_json:
            _print({"cycles": [{"id": c.id, "status": c.status, "outcome": c.outcome, "gate": c.gate,
                                "trigger": c.trigger, "started_at": c.started_at,
                                "duration_seconds": c.duration_seconds, "artifacts_dir": c.artifacts_dir}
                               for c in cycles]})
            return
        if not cycles:
            typer.echo("no cycles yet (run `autoopt trigger`)")
        for c in cycles:
            dur = f"{c.duration_seconds:.1f}s" if c.duration_seconds is not None else "running"
            typer.echo(f"{c.id}  {c.status:<8} {c.outcome or '-':<18} gate={c.gate or '-':<12} {dur:>8}  "
                       f"{c.summary.get('reason') or ''}")

    @loop_app.command("recover")
    def recover(as_json: bool = typer.Option(False, "--json")) -> None:
        """Abort cycles a dead process left running, undoing their deployment changes."""
        from autooptimizer.loop.cycle import CycleRunner

        done = CycleRunner().recover()
        if as_json:
            _print({"aborted": [{"id": c.id, "recovery": c.summary.get("recovery")} for c in done]})
        else:
            typer.echo("\n".join(f"{c.id}: aborted, {c.summary.get('recovery')}" for c in done) or "nothing to do")

    @app.command()
    def prune(
        dry_run: bool = typer.Option(False, "--dry-run", help="list what would be deleted, delete nothing"),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Apply the profile's retention policy now: the gated devops.prune_storage (never a protected object)."""
        from autooptimizer.tools import load_all_tools

        res = load_all_tools().call("devops", "prune_storage", {"dry_run": dry_run}, requested_by="operator:cli")
        if as_json:
            _print(res.model_dump())
        elif res.decision != "permit" or res.error:
            typer.secho(f"prune_storage {res.decision}: {res.error or res.reason}", fg="red", err=True)
        else:
            result = res.result or {}
            items = result["planned"] if dry_run else result["deleted"]
            typer.echo("\n".join(f"{i['kind']}: {i['name']} ({i['reason']})" for i in items) or "nothing to delete")
        if res.decision != "permit" or res.error:
            raise typer.Exit(1)

    @loop_app.command("show")
    def show(cycle_id: str) -> None:
        """Print one cycle's journal (steps, decisions, outcome) as JSON."""
        from autooptimizer.loop.journal import Journal
        from autooptimizer.settings import get_settings

        _print(Journal(get_settings()).get(cycle_id).model_dump())

    @app.command()
    def serve(
        host: str = typer.Option("127.0.0.1", help="bind address"),
        port: int = typer.Option(None, help="default AUTOOPT_API_PORT (8800)"),
        env: str = typer.Option(None, help="dev|staging|prod (default AUTOOPT_ENV)"),
        supervise: bool = typer.Option(False, "--supervise", help="run the service as a child and restart it "
                                       "whenever it dies (pid in AUTOOPT_HOME/run/optimizer.pid)"),
    ) -> None:
        """Serve the optimizer REST API (docs at /docs), the operator console (/ui) and the profile's scheduler.
        With --supervise, a supervisor (infra/supervisor.py) restarts it after a crash or SIGKILL; each start
        recovers the cycle its predecessor left running."""
        import uvicorn

        from autooptimizer.infra.memory import limit_arenas

        limit_arenas()  # before any thread; the supervised child inherits MALLOC_ARENA_MAX (infra/memory.py)

        from autooptimizer.settings import get_settings

        if env:
            os.environ["AUTOOPT_ENV"] = env
            get_settings.cache_clear()
        settings = get_settings()
        if supervise:
            from autooptimizer.infra.supervisor import serve_argv
            from autooptimizer.infra.supervisor import supervise as run_supervised

            code = run_supervised(serve_argv(host, port, env), settings.path("run", "x").parent)
            raise typer.Exit(code if code >= 0 else 128 - code)  # a child killed by signal N: 128 + N
        from autooptimizer.api.app import create_app

        base = f"http://{host}:{port or settings.api_port}"
        typer.echo(f"AutoOptimizer API ({settings.env}) on {base}/docs, console on {base}/ui", err=True)
        uvicorn.run(create_app(settings), host=host, port=port or settings.api_port, log_level="info")

    @helm_app.command("render")
    def render(
        values: str = typer.Option("dev", help="dev | oracle (staging) | nvidia (prod) | a values file"),
        out: Path = typer.Option(None, help="write the manifests here (default: stdout)"),
        validate: bool = typer.Option(True, help="also run helm lint --strict and kubernetes-validate (offline)"),
        patch: Path = typer.Option(None, help="a helm_patch.yaml to apply on top (as GitOps does)"),
    ) -> None:
        """`helm template` of deploy/helm/autooptimizer (Helm's own SDK, offline), values checked against
        values.schema.json; a bad value exits 2 naming its JSON path and the rule."""
        from autooptimizer.deploy.helm import lint_chart, render_chart, validate_manifests

        extra = [patch] if patch else []
        docs = render_chart(values, extra_values=extra)
        report = None
        if validate:
            lint_chart(values, extra_values=extra)
            report = validate_manifests(docs)
        text = "".join(f"---\n{d}" for d in docs)
        if out:
            out.write_text(text)
        else:
            typer.echo(text)
        if report:
            typer.echo(f"helm lint --strict: ok; {report['count']} manifests valid against Kubernetes "
                       f"{report['version']}", err=True)

    @bench.command("loop")
    def bench_loop(as_json: bool = typer.Option(False, "--json"),
                   watch_seconds: float = typer.Option(20.0, help="watch window after the bad deploy")) -> None:
        """Time from a bad deploy (GitOps commit) to a completed automatic rollback, on the embedded default."""
        from autooptimizer.loop.bench import bench_rollback

        result = bench_rollback(watch_seconds=watch_seconds)
        if as_json:
            _print(result)
        else:
            for k, v in result.items():
                typer.echo(f"{k}: {v}")
