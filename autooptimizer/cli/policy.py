"""CLI for the safety core: `policy check|validate|show`, `approvals`, `kill-switch`, `audit`, `bench policy`.

Only typer/stdlib at module level; cedarpy and the stores are imported inside the commands.
"""

from __future__ import annotations

import getpass
import json
import time
from datetime import datetime

import typer

from autooptimizer.errors import InputError

policy_app = typer.Typer(help="Check, validate and show the Cedar policies.", no_args_is_help=True)
approvals_app = typer.Typer(help="Human approvals for needs_approval decisions.", no_args_is_help=True)
kill_app = typer.Typer(help="The kill switch: stops every change/critical tool call.", no_args_is_help=True)
audit_app = typer.Typer(help="The hash-chained audit trail.", no_args_is_help=True)


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in some containers
        return "operator"


def _loads(raw: str, what: str, fix: str) -> object:
    """Parse operator JSON; text nested too deep for the parser is an input error, not a traceback."""
    from autooptimizer.jsonsafe import MAX_DEPTH, json_text_depth

    if (depth := json_text_depth(raw)) > MAX_DEPTH:
        raise InputError(f"{what} is nested {depth} levels deep; at most {MAX_DEPTH} are accepted (the registry "
                         "denies deeper tool arguments: registry.args-too-deep).", fix)
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InputError(f"{what} is not valid JSON: {exc}.", fix) from exc


def _json_object(raw: str | None, what: str) -> dict:
    if raw is None:
        return {}
    value = _loads(raw, what, "Pass a JSON object, e.g. '{}'.")
    if not isinstance(value, dict):
        raise InputError(f"{what} must be a JSON object, got {type(value).__name__}.", "Pass e.g. '{\"key\": 1}'.")
    return value


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


# --- policy ---------------------------------------------------------------------------------------------------
@policy_app.command("check")
def policy_check(
    env: str = typer.Option(None, "--env", help="dev|staging|prod (default AUTOOPT_ENV)"),
    agent: str = typer.Option(..., "--agent", help="calling agent"),
    tool: str = typer.Option(..., "--tool", help="tool name"),
    args: str = typer.Option(None, "--args", help="tool arguments as JSON; omit for a policy-only check"),
    context: str = typer.Option(None, "--context", help="operator what-if facts as JSON; override computed ones"),
    audit: bool = typer.Option(False, "--audit", help="also record the check in the audit log"),
    as_json: bool = typer.Option(False, "--json", help='print {"decision", "policies", "reason"}'),
) -> None:
    """What would the PDP decide? Computes facts from the args like the registry does; runs nothing."""
    from autooptimizer.policies.audit import AuditLog
    from autooptimizer.policies.facts import CONTEXT_KEYS
    from autooptimizer.settings import get_settings
    from autooptimizer.tools.registry import REGISTRY, load_all_tools

    env = env or get_settings().env
    ctx_override = _json_object(context, "--context")
    unknown = sorted(set(ctx_override) - set(CONTEXT_KEYS))
    if unknown:
        raise InputError(f"--context has unknown keys {unknown}.", f"Use only {sorted(CONTEXT_KEYS)}.")
    notes: list[str] = []
    raw_args: object = None
    registry = REGISTRY
    if args is None:
        notes.append("no --args: policy-only check (argument validation and facts from args skipped)")
    else:
        raw_args = _loads(args, "--args", "Pass a JSON object, e.g. '{\"a\": 1}'.")
        try:
            registry = load_all_tools()
        except Exception as exc:  # noqa: BLE001 - a broken area module must not hide the policy answer
            notes.append(f"tool modules failed to load ({exc}); facts from args not computed")
            raw_args = None
        if raw_args is not None and tool not in {s.name for s in registry.all()}:
            notes.append(f"{tool} is not a registered tool here; facts from args not computed")
    # an operator's what-if is an unscoped caller, as the loop is: in_scope true unless --context says otherwise
    decision = registry.decide(agent, tool, raw_args, env=env, overrides=ctx_override)
    context_used = decision.context
    if audit:
        AuditLog().append({"kind": "check", "actor": _user(), "env": env, "agent": agent, "tool": tool,
                           "args": raw_args if len(args or "") <= 65536 else {"truncated": True, "bytes": len(args)},
                           "context": context_used, "decision": decision.decision, "policies": decision.policies,
                           "reason": decision.reason, "pdp": decision.pdp, "cycle_id": None, "trace_id": None})
    if as_json:
        typer.echo(json.dumps(decision.model_dump(include={"decision", "policies", "reason"})))
        return
    color = {"permit": "green", "deny": "red", "needs_approval": "yellow"}[decision.decision]
    typer.secho(decision.decision, fg=color, bold=True)
    typer.echo(f"policies: {', '.join(decision.policies)}")
    typer.echo(f"reason:   {decision.reason}")
    typer.echo(f"context:  {json.dumps(context_used, sort_keys=True)}")
    for note in notes:
        typer.echo(f"note:     {note}")


@policy_app.command("validate")
def policy_validate() -> None:
    """Parse and validate every environment's policy set against the schema and catalogue (exit 2 if broken)."""
    from autooptimizer.policies.catalog import policy_dir
    from autooptimizer.policies.pdp import load_all

    pdps = load_all()
    for env, pdp in pdps.items():
        typer.echo(f"{env}: {len(pdp.policies)} policies OK ({', '.join(p.name for p in pdp.files)})")
    typer.echo(f"policy dir: {policy_dir()}")


@policy_app.command("show")
def policy_show(env: str = typer.Option(None, "--env", help="dev|staging|prod (default AUTOOPT_ENV)")) -> None:
    """List the env's policies: id, effect, and reason."""
    from autooptimizer.policies.pdp import get_pdp
    from autooptimizer.settings import get_settings

    pdp = get_pdp(env or get_settings().env)
    for meta in pdp.policies.values():
        effect = "needs_approval" if meta.needs_approval else meta.effect
        typer.echo(f"{meta.id:<34} {effect:<15} {meta.reason}")


# --- approvals ------------------------------------------------------------------------------------------------
@approvals_app.command("list")
def approvals_list(
    status: str = typer.Option(None, "--status", help="pending|approved|denied|used"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """List approval requests (timed-out pending requests are shown as denied)."""
    from autooptimizer.policies.approvals import ApprovalStore

    if status not in (None, "pending", "approved", "denied", "used"):
        raise InputError(f"Unknown status {status!r}.", "Use pending, approved, denied or used.")
    reqs = ApprovalStore().list(status)  # type: ignore[arg-type]
    if as_json:
        typer.echo(json.dumps([r.model_dump() for r in reqs], indent=1))
        return
    if not reqs:
        typer.echo("no approval requests")
    for r in reqs:
        typer.echo(f"{r.id}  {r.status:<8} {r.env:<7} {r.agent} -> {r.tool}  asked {_when(r.created_at)} by "
                   f"{r.requested_by}; expires {_when(r.expires_at)}")
        typer.echo(f"    why:  {r.reason} [{', '.join(r.policies)}]")
        typer.echo(f"    args: {json.dumps(r.args, sort_keys=True)[:300]}")
        if r.evidence:
            typer.echo(f"    evidence: {json.dumps(r.evidence, sort_keys=True)[:300]}")
        if r.decided_by:
            typer.echo(f"    answered by {r.decided_by} at {_when(r.decided_at)}" + (f": {r.note}" if r.note else ""))


@approvals_app.command("show")
def approvals_show(request_id: str) -> None:
    """Print one request as JSON."""
    from autooptimizer.policies.approvals import ApprovalStore

    typer.echo(ApprovalStore().get(request_id).model_dump_json(indent=1))


@approvals_app.command("approve")
def approvals_approve(request_id: str, by: str = typer.Option(None, "--by"), note: str = typer.Option("", "--note")
                      ) -> None:
    """Approve a pending request; the agent's repeated identical call may then run once."""
    from autooptimizer.policies.approvals import ApprovalStore

    r = ApprovalStore().approve(request_id, by or _user(), note)
    typer.echo(f"approved {r.id}: {r.agent} -> {r.tool} may run once, until {_when(r.use_by)}")


@approvals_app.command("deny")
def approvals_deny(request_id: str, by: str = typer.Option(None, "--by"), note: str = typer.Option("", "--note")
                   ) -> None:
    """Deny a pending request."""
    from autooptimizer.policies.approvals import ApprovalStore

    r = ApprovalStore().deny(request_id, by or _user(), note)
    typer.echo(f"denied {r.id}: {r.agent} -> {r.tool}")


# --- kill switch ----------------------------------------------------------------------------------------------
def _print_switch(as_json: bool) -> None:
    from autooptimizer.policies.killswitch import kill_switch

    st = kill_switch.state()
    if as_json:
        typer.echo(st.model_dump_json())
        return
    typer.secho(f"kill switch: {'ON' if st.on else 'off'}", fg="red" if st.on else "green", bold=True)
    if st.by or st.reason:
        typer.echo(f"set by {st.by or '?'} at {_when(st.at)}" + (f": {st.reason}" if st.reason else ""))


@kill_app.command("on")
def kill_on(reason: str = typer.Option("", "--reason"), by: str = typer.Option(None, "--by")) -> None:
    """Stop every change/critical tool call (read tools keep working)."""
    from autooptimizer.policies.killswitch import kill_switch

    kill_switch.set(True, by or _user(), reason)
    _print_switch(False)


@kill_app.command("off")
def kill_off(reason: str = typer.Option("", "--reason"), by: str = typer.Option(None, "--by")) -> None:
    """Let change/critical tools run again (policies still apply)."""
    from autooptimizer.policies.killswitch import kill_switch

    kill_switch.set(False, by or _user(), reason)
    _print_switch(False)


@kill_app.command("status")
def kill_status(as_json: bool = typer.Option(False, "--json")) -> None:
    """Show whether the kill switch is on."""
    _print_switch(as_json)


# --- audit ----------------------------------------------------------------------------------------------------
@audit_app.command("verify")
def audit_verify(as_json: bool = typer.Option(False, "--json")) -> None:
    """Check the hash chain; exit 1 naming the first broken record."""
    from autooptimizer.policies.audit import AuditLog

    log = AuditLog()
    rep = log.verify()
    if as_json:
        typer.echo(rep.model_dump_json())
    elif rep.ok:
        typer.secho(f"audit log OK: {rep.records} records, chain intact ({log.path})", fg="green")
    else:
        where = f"record {rep.broken_seq}" if rep.broken_seq else "the log"
        typer.secho(f"audit log BROKEN at {where}" + (f" (line {rep.broken_line})" if rep.broken_line else "")
                    + f": {rep.problem}", fg="red", err=True)
    if not rep.ok:
        raise typer.Exit(1)


@audit_app.command("replay")
def audit_replay(cycle_id: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """Re-decide a cycle's recorded decisions with today's policies and list those that would differ."""
    from autooptimizer.policies.audit import AuditLog

    rep = AuditLog().replay(cycle_id)
    if as_json:
        typer.echo(rep.model_dump_json(indent=1))
        return
    typer.echo(f"cycle {cycle_id}: {rep.evaluated} decisions re-evaluated, {len(rep.differences)} would differ")
    for d in rep.differences:
        typer.echo(f"  #{d.seq} {d.env} {d.agent} -> {d.tool}: was {d.recorded} {d.recorded_policies}, "
                   f"now {d.now} {d.now_policies} ({d.now_reason})")


@audit_app.command("tail")
def audit_tail(n: int = typer.Option(20, "-n", help="records to show")) -> None:
    """Print the last N records (one JSON per line)."""
    from collections import deque

    from autooptimizer.policies.audit import AuditLog

    for rec in deque(AuditLog().records(), maxlen=n):
        typer.echo(json.dumps(rec, sort_keys=True))


# --- benchmark ------------------------------------------------------------------------------------------------
BENCH_CASES: list[tuple[str, str, str, dict]] = [
    ("dev", "metrics", "query_metrics", {}),
    ("prod", "devops", "deploy_canary", {"canary_weight": 0.3}),
    ("prod", "devops", "deploy_canary", {"canary_weight": 0.9}),
    ("staging", "devops", "promote_model", {"ab_passed": True}),
    ("prod", "devops", "promote_model", {"ab_passed": False}),
    ("dev", "ml", "train_reranker", {"estimated_cost": 2.0, "budget_remaining": 1.0}),
    ("prod", "ml", "delete_model", {"target_is_gold": True, "approved": True}),
    ("staging", "data", "deploy_canary", {"canary_weight": 0.1}),
    ("dev", "ml", "build_dataset", {"kill_switch": True}),
    ("dev", "ml", "delete_model", {"in_scope": False}),
]


def run_policy_bench(n: int = 20000, warmup: int = 1000) -> dict:
    """Time `PDP.decide` (pre-parsed policy set, schema and entities) over a mix of allow/deny/approval cases."""
    from autooptimizer.policies.pdp import load_all

    pdps = load_all()
    cases = [(pdps[env], agent, tool, {"in_scope": True, **ctx}) for env, agent, tool, ctx in BENCH_CASES]
    for i in range(warmup):
        pdp, agent, tool, ctx = cases[i % len(cases)]
        pdp.decide(agent, tool, ctx)
    times = []
    perf = time.perf_counter_ns
    for i in range(n):
        pdp, agent, tool, ctx = cases[i % len(cases)]
        t = perf()
        pdp.decide(agent, tool, ctx)
        times.append(perf() - t)
    times.sort()
    total_s = sum(times) / 1e9
    import os

    return {"decisions_per_s": round(n / total_s, 1), "p50_us": round(times[n // 2] / 1000, 1),
            "p99_us": round(times[min(n - 1, int(n * 0.99))] / 1000, 1), "n": n,
            "load_avg_1m": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()}


def register(app: typer.Typer, bench: typer.Typer) -> None:
    """Add this area's commands to the root app and its benchmarks to `autoopt bench`."""
    app.add_typer(policy_app, name="policy")
    app.add_typer(approvals_app, name="approvals")
    app.add_typer(kill_app, name="kill-switch")
    app.add_typer(audit_app, name="audit")

    @bench.command("policy")
    def bench_policy(n: int = typer.Option(20000, "--n", help="timed decisions"),
                     as_json: bool = typer.Option(False, "--json")) -> None:
        """In-process Cedar decision latency (target p99 <= 200 us)."""
        res = run_policy_bench(n)
        if as_json:
            typer.echo(json.dumps(res))
        else:
            typer.echo(f"{res['decisions_per_s']:.0f} decisions/s  p50 {res['p50_us']} us  p99 {res['p99_us']} us "
                       f"(n={res['n']}, load {res['load_avg_1m']} on {res['cpus']} CPUs)")
