"""CLI for the agents area: `route`, `chat`, `crew kickoff`, `traces list|show`, `bench router`.

Only typer/stdlib at module level; the router, AutoGen and CrewAI are imported inside the commands.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, cast

import typer

crew_app = typer.Typer(help="The CrewAI optimization crew (hierarchical, supervisor as manager).",
                       no_args_is_help=True)
traces_app = typer.Typer(help="Conversation traces kept under AUTOOPT_HOME/traces.", no_args_is_help=True)


def _print_json(value: object) -> None:
    typer.echo(json.dumps(value, indent=2, default=str))


def route(goal: str = typer.Argument(..., help="the goal, in plain words"),
          as_json: bool = typer.Option(False, "--json", help='print {"agent", "confidence"}')) -> None:
    """Which agent would take this goal first (the offline router); `clarify` if none fits or it is unsure."""
    from autooptimizer.agents.router import get_router

    r = get_router().route(goal)
    if as_json:
        _print_json({"agent": r.agent, "confidence": r.confidence})
    else:
        typer.echo(f"{r.agent} (confidence {r.confidence:.2f})")


def _ask_approvals(ids: list[str]) -> list[tuple[str, bool]]:
    """Show what/why/evidence for each pending request and ask y/N; record the answer in the store."""
    from autooptimizer.policies.approvals import ApprovalStore
    from autooptimizer.tracing import redact

    store = ApprovalStore()
    answers = []
    for approval_id in ids:
        req = store.get(approval_id)
        typer.secho(f"\nApproval needed ({approval_id})", bold=True)
        typer.echo(f"  what:     {req.agent} -> {req.tool}({json.dumps(req.args)}) in {req.env}")
        typer.echo(f"  why:      {req.reason} [{', '.join(req.policies)}]")
        typer.echo(f"  evidence: {json.dumps(redact(req.evidence or {}), default=str)[:1500]}")
        yes = typer.confirm("  Approve this exact call?", default=False)
        if yes:
            store.approve(approval_id, by="chat", note="approved in interactive chat")
        else:
            store.deny(approval_id, by="chat", note="denied in interactive chat")
        answers.append((approval_id, yes))
    return answers


def chat(
    goal: str = typer.Argument(None, help="the goal, e.g. 'NDCG dropped, fix the reranker'"),
    env: str = typer.Option(None, "--env", help="dev|staging|prod (default AUTOOPT_ENV)"),
    no_input: bool = typer.Option(False, "--no-input", help="never prompt: leave approvals pending and stop"),
    as_json: bool = typer.Option(False, "--json", help="print the run as JSON instead of streaming it"),
    resume: str = typer.Option(None, "--resume", help="continue the chat paused on this approval id"),
) -> None:
    """Talk to the supervisor: it routes the goal, the specialists act through the policy gate."""
    from autooptimizer.errors import InputError
    from autooptimizer.tracing import install_log_redaction

    install_log_redaction()
    if not goal and not resume:
        raise InputError("No goal given.", 'Run `autoopt chat "GOAL"` or `autoopt chat --resume APPROVAL_ID`.')
    stream = None if as_json else typer.echo
    try:
        result = _chat_run(goal, env, no_input=no_input, as_json=as_json, resume=resume, stream=stream)
    except Exception as exc:  # noqa: BLE001 - with --json, a failure is JSON too (status error, exit 1)
        if not as_json:
            raise
        _fail_json(exc)
        return
    if as_json:
        _print_json({k: v for k, v in result.model_dump().items()
                     if k in ("routed_to", "answer", "tool_calls", "pending_approvals", "trace_id", "status",
                              "run_id", "intent", "allowed_tools", "stop_kind", "reason", "usage", "backend")})
    else:
        if result.status == "paused":
            typer.secho(f"\n{result.answer}", fg="yellow")
        if result.status in ("refused", "error", "budget_exceeded"):
            typer.secho(f"\n{result.answer}", fg="red")
        typer.echo(f"\ntrace: {result.trace_id}  (autoopt traces show {result.trace_id})")
    if result.status in ("error", "budget_exceeded"):
        raise typer.Exit(1)


def _fail_json(exc: BaseException) -> None:
    """`{"status": "error", "reason": ...}` for a run that failed outside the model loop; exit 1."""
    from autooptimizer.agents.budgeted_client import explain_error
    from autooptimizer.errors import AutoOptError

    if isinstance(exc, AutoOptError):
        kind, reason = type(exc).__name__, f"{exc.problem} {exc.fix}".strip()
    else:
        err = explain_error(exc)
        kind, reason = err.kind, err.reason
    _print_json({"status": "error", "stop_kind": kind, "reason": reason, "tool_calls": [], "pending_approvals": []})
    raise typer.Exit(1)


def _chat_run(goal: str, env: str | None, *, no_input: bool, as_json: bool, resume: str | None,
              stream: object) -> Any:
    from autooptimizer.agents.chat import resume_chat, run_chat
    from autooptimizer.tracing import start_trace

    say = cast("Callable[[str], None] | None", stream if callable(stream) else None)
    if resume:
        return resume_chat(resume, on_message=say)
    if no_input or as_json:
        return run_chat(goal, env, on_message=say)
    with start_trace("chat", {"goal": goal[:500], "env": env or "", "interactive": True}, inputs={"goal": goal}):
        result = run_chat(goal, env, on_message=say)
        while result.status == "paused" and result.pending_approvals:
            answers = _ask_approvals(result.pending_approvals)
            result = resume_chat(answers[-1][0], on_message=say)
    return result


@crew_app.command("kickoff")
def crew_kickoff(
    goal: str = typer.Option(..., "--goal", help="the goal for the crew"),
    env: str = typer.Option(None, "--env", help="dev|staging|prod (default AUTOOPT_ENV)"),
    approval: list[str] = typer.Option([], "--approval", help="approval id granted for this run (repeatable)"),
    as_json: bool = typer.Option(False, "--json", help="print answer, tool calls, pending approvals, trace id"),
    verbose: bool = typer.Option(False, "--verbose", help="CrewAI's own verbose output"),
) -> None:
    """Run the CrewAI optimization crew once (hierarchical process, supervisor as manager)."""
    from autooptimizer.crews import optimization_crew
    from autooptimizer.tracing import install_log_redaction

    install_log_redaction()
    import contextlib
    import sys

    try:  # with --json, stdout carries the JSON only (CrewAI prints its own notices)
        with contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext():
            crew = optimization_crew(env=env, approvals=approval, verbose=verbose)
            crew.kickoff(inputs={"goal": goal})
    except Exception as exc:  # noqa: BLE001 - with --json, a failure is JSON too (status error, exit 1)
        if not as_json:
            raise
        _fail_json(exc)
        return
    run = crew.last_run
    if as_json:
        _print_json(run.model_dump())
    else:
        typer.echo(run.answer)
        for c in run.tool_calls:
            typer.echo(f"  {c['agent']}: {c['tool']} -> {c['decision']} (executed={c['executed']})")
        if run.pending_approvals:
            typer.secho(f"pending approvals: {', '.join(run.pending_approvals)}", fg="yellow")
        typer.echo(f"trace: {run.trace_id}")
    if run.status in ("error", "budget_exceeded"):
        raise typer.Exit(1)


@traces_app.command("list")
def traces_list(limit: int = typer.Option(20, "--limit", min=1),
                as_json: bool = typer.Option(False, "--json")) -> None:
    """The latest traces, newest first."""
    from autooptimizer.tracing import trace_store

    rows = trace_store().list(limit)
    if as_json:
        _print_json([r.model_dump() for r in rows])
        return
    if not rows:
        typer.echo("no traces yet")
    for r in rows:
        when = datetime.fromtimestamp(r.start).strftime("%Y-%m-%d %H:%M:%S")
        goal = str(r.metadata.get("goal", ""))[:60]
        typer.echo(f"{r.trace_id}  {when}  {r.name:<14} {r.status:<5} {r.spans:>4} spans  {r.duration_ms:8.0f} ms  "
                   f"{goal}")


@traces_app.command("show")
def traces_show(trace_id: str = typer.Argument(..., help="a trace id (or a unique prefix)"),
                as_json: bool = typer.Option(False, "--json", help="print the spans as JSON")) -> None:
    """Render one trace as a tree: conversation > agent turns > LLM calls, tool calls > PDP decisions."""
    from autooptimizer.tracing import render_tree, trace_store

    spans = trace_store().spans(trace_id)
    if as_json:
        _print_json([s.model_dump() for s in spans])
    else:
        typer.echo(render_tree(spans))


def bench_router(
    goals: str = typer.Option(None, "--goals", help="a YAML list of {goal, label} (default: agents/router_eval.yaml)"),
    as_json: bool = typer.Option(False, "--json", help="print accuracy, latency, confusion matrix and misses as JSON"),
    calibrate: bool = typer.Option(False, "--calibrate", help="instead: re-derive C and MIN_CONFIDENCE on the "
                                   "training data (grouped k-fold)"),
) -> None:
    """Router accuracy, per-goal latency and the confusion matrix on a labelled goals file."""
    from pathlib import Path

    from autooptimizer.agents import router as r

    if calibrate:
        out = r.calibrate()
        if as_json:
            _print_json(out)
            return
        typer.echo(f"training goals: {out['goals']}  folds: {out['folds']} (whole templates held out)")
        for c, row in out["grid"].items():
            cells = (f"{t}:{m['accuracy']:.3f}/{m['wrong_agent']:.3f}" for t, m in row.items())
            typer.echo(f"  C={c}: " + "  ".join(cells))
        typer.echo(f"best: {out['best']}  (threshold:accuracy/wrong-agent rate)")
        return
    items = r.load_goals(Path(goals)) if goals else r.load_eval_set()
    res = r.get_router().evaluate(items)
    if as_json:
        _print_json({"goals_file": goals or str(r.HERE / "router_eval.yaml"), **res.model_dump()})
        return
    typer.echo(f"goals: {res.total}  accuracy: {res.accuracy:.1%} ({res.correct}/{res.total})  "
               f"p50: {res.p50_ms:.1f} ms  p95: {res.p95_ms:.1f} ms")
    typer.echo(format_confusion(res.confusion, res.labels))
    for e in res.errors:
        typer.echo(f"  miss: {e['goal']!r}: expected {e['expected']}, got {e['got']} ({e['confidence']:.2f})")


def format_confusion(confusion: dict[str, dict[str, int]], labels: list[str]) -> str:
    """The confusion matrix as a markdown table: a row per expected label, a column per routed label."""
    lines = ["| expected \\ routed | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    lines += [f"| {e} | " + " | ".join(str(confusion.get(e, {}).get(g, 0)) for g in labels) + " |" for e in labels]
    return "\n".join(lines)


def bench_agents(
    endpoint: str = typer.Option(None, "--endpoint", help="an OpenAI-compatible base URL (default: the offline "
                                 "planner, the baseline)"),
    model: str = typer.Option(None, "--model", help="the model name to send (with --endpoint)"),
    only: list[str] = typer.Option([], "--only", help="a scenario id or category (repeatable)"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
) -> None:
    """Evaluate a model on the agents' own policy and tools: 30+ scenarios (gate problems, questions, approvals,
    off-topic, injected goals, poisoned tool outputs); task success, routing, valid calls, denials, budget stops."""
    from autooptimizer.agents.bench import run_bench
    from autooptimizer.errors import InputError

    if model and not endpoint:
        raise InputError("--model needs --endpoint.", "Pass --endpoint URL (e.g. from `autoopt llm serve`).")

    def progress(r: object) -> None:
        if not as_json:
            ok = "ok  " if getattr(r, "success", False) else "FAIL"
            typer.echo(f"{ok} {getattr(r, 'id', '')}: {getattr(r, 'status', '')} routed {getattr(r, 'routed_to', '')}"
                       f" calls {getattr(r, 'tool_calls', 0)} denied {getattr(r, 'denied_calls', 0)} "
                       f"{getattr(r, 'seconds', 0):.1f}s {'; '.join(getattr(r, 'failures', []))[:160]}")

    rep = run_bench(endpoint, model, only=only or None, on_result=progress)
    if as_json:
        _print_json(rep.model_dump())
        return
    valid = "-" if rep.valid_tool_call_share is None else f"{rep.valid_tool_call_share:.1%}"
    typer.echo(f"\nmodel {rep.model}: {rep.scenarios} scenarios, task success {rep.task_success:.1%}, routing "
               f"{rep.routing_accuracy:.1%}, valid tool calls {valid}, denied {rep.denied_calls}, budget stops "
               f"{rep.budget_stops}, errors {rep.errors}, tokens {rep.tokens}, "
               f"{rep.seconds_per_scenario:.1f} s/scenario")
    typer.echo("by category: " + ", ".join(f"{c} {v:.0%}" for c, v in rep.by_category.items()))


def register(app: typer.Typer, bench: typer.Typer) -> None:
    """Add this area's commands to the root app and its benchmarks to `autoopt bench`."""
    app.command("route")(route)
    app.command("chat")(chat)
    app.add_typer(crew_app, name="crew")
    app.add_typer(traces_app, name="traces")
    bench.command("router")(bench_router)
    bench.command("agents")(bench_agents)
