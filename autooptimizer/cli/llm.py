"""CLI for the local model server: `autoopt llm serve|status|stop` (infra/llm_server.py).

Only typer/stdlib at module level; the server package is imported by the server process only.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

llm_app = typer.Typer(help="A local OpenAI-compatible model server (llama.cpp via the [local-llm] extra).",
                      no_args_is_help=True)


def _env_lines(state: object) -> str:
    return (f"export AUTOOPT_LLM_BASE_URL={getattr(state, 'base_url', '')}\n"
            f"export AUTOOPT_LLM_MODEL={getattr(state, 'name', '')}")


@llm_app.command("serve")
def serve(model: Path = typer.Option(None, "--model", help="a GGUF file (default: the packaged SmolLM2-135M)"),
          port: int = typer.Option(None, "--port", help="port on 127.0.0.1 (default: a free one)"),
          threads: int = typer.Option(None, "--threads", min=1, help="CPU threads (default AUTOOPT_THREADS)"),
          ctx: int = typer.Option(8192, "--ctx", min=512, help="context window in tokens (set llm.contextTokens "
                                  "in the profile to match)"),
          name: str = typer.Option(None, "--name", help="the model name clients send (AUTOOPT_LLM_MODEL)"),
          as_json: bool = typer.Option(False, "--json", help="print the server's state as JSON")) -> None:
    """Start the server in the background on 127.0.0.1 and print the two settings that point the agents at it."""
    from autooptimizer.infra import llm_server

    state = llm_server.start(model=model, port=port, threads=threads, ctx=ctx, name=name)
    if as_json:
        typer.echo(json.dumps({**state.model_dump(), "base_url": state.base_url}))
        return
    typer.echo(f"model server up: pid {state.pid}, {state.base_url}, {state.model} ({state.threads} threads)")
    typer.echo(_env_lines(state))


@llm_app.command("status")
def status(as_json: bool = typer.Option(False, "--json")) -> None:
    """Whether the server started by `autoopt llm serve` is up (exit 1 when it is not)."""
    from autooptimizer.infra import llm_server

    state, up = llm_server.status()
    if as_json:
        typer.echo(json.dumps({"running": up, **({**state.model_dump(), "base_url": state.base_url} if state
                                                  else {})}))
    elif state is None:
        typer.echo("no model server recorded (start one with `autoopt llm serve`)")
    else:
        typer.echo(f"{'running' if up else 'not answering'}: pid {state.pid}, {state.base_url}, {state.model}")
    if not up:
        raise typer.Exit(1)


@llm_app.command("stop")
def stop() -> None:
    """Stop the server started by `autoopt llm serve`."""
    from autooptimizer.infra import llm_server

    state = llm_server.stop()
    typer.echo(f"stopped pid {state.pid}" if state else "no model server recorded")


def register(app: typer.Typer, bench: typer.Typer) -> None:
    app.add_typer(llm_app, name="llm")
