"""What every framework adapter shares: one function that sends a call through `REGISTRY.call` (so no framework
path can skip the PDP), traces it, records it for the run result, and attaches a granted approval only when
the call is exactly the one a person approved, and carries the run's scope (the tools the operator's intent
allows, agents/intent.py) to the registry, which turns it into the PDP's `in_scope` fact.

Arguments reach the registry as the framework produced them (the registry checks their shape before anything
recurses over them), and everything shown here - span payloads, evidence, the outcome text the model reads - goes
through the bounded, iterative `autooptimizer.jsonsafe` helpers, so no argument or result can make an adapter
raise.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import threading
import weakref
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, cast

from autooptimizer.agents.protocol import Outcome
from autooptimizer.jsonsafe import check_json, preview, to_json_safe
from autooptimizer.tools.registry import REGISTRY, ToolEvent, ToolRegistry


@dataclass
class RunContext:
    """Per-conversation state the adapters need: env, approvals granted for this run, the run's scope (None =
    unscoped), the calls made."""

    env: str | None = None
    goal: str = ""
    granted: set[str] = field(default_factory=lambda: set[str]())
    scope: frozenset[str] | None = None
    sample_source: Any = None  # where the run's A/B tests read live numbers (None: the live source)
    budget: Any = None  # the run's `agents.budgets.RunBudget` (None: unbounded, e.g. the loop's own calls)
    calls: list[Outcome] = field(default_factory=lambda: list[Outcome]())
    lock: threading.Lock = field(default_factory=threading.Lock)


_current: contextvars.ContextVar[RunContext | None] = contextvars.ContextVar("autoopt_run", default=None)
_active: list[RunContext] = []  # fallback for worker threads that do not inherit the context


@contextlib.contextmanager
def run_scope(ctx: RunContext) -> Generator[RunContext, None, None]:
    token = _current.set(ctx)
    _active.append(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)
        _active.remove(ctx)


def current_run() -> RunContext:
    ctx = _current.get()
    if ctx is None and _active:
        ctx = _active[-1]
    return ctx or RunContext()


_traced: weakref.WeakSet[ToolRegistry] = weakref.WeakSet()


def _trace_decision(event: ToolEvent) -> None:
    """Registry listener: each PDP decision becomes a `policy` span under the current tool span."""
    if event.phase != "decision":
        return
    from autooptimizer.tracing import span

    c = event.call
    with span(f"pdp:{c.tool}", kind="policy", inputs={"agent": c.agent, "tool": c.tool, "context": event.context},
              decision=c.decision) as sp:
        sp.set_outputs({"decision": c.decision, "policies": c.policies, "reason": c.reason})
        sp.summary(f"{c.decision} by {', '.join(c.policies) or '-'}")


def ensure_traced(registry: ToolRegistry) -> None:
    if registry not in _traced:
        registry.add_listener(_trace_decision)
        _traced.add(registry)


def _granted_for(registry: ToolRegistry, agent: str, name: str, args: dict[str, Any], env: str,
                 granted: set[str]) -> str | None:
    """The id of an approval granted in this run for exactly this call (same tool, canonical args, agent, env)."""
    if not granted or check_json(args) is not None:
        return None
    from pydantic import ValidationError

    from autooptimizer.policies.approvals import ApprovalStore, call_hash

    try:
        canon = registry.get(name).args_model.model_validate(args).model_dump(mode="json")
    except (ValidationError, Exception):  # noqa: BLE001 - the registry will report the bad call itself
        return None
    wanted = call_hash(name, canon, agent, env)
    store = ApprovalStore()
    for approval_id in sorted(granted):
        with contextlib.suppress(Exception):
            req = store.get(approval_id)
            if req.call_hash == wanted and req.status == "approved":
                return approval_id
    return None


def effective_scope(*scopes: frozenset[str] | None) -> frozenset[str] | None:
    """The tools every given scope allows (None = that source sets no bound); None when none sets one."""
    bounds = [s for s in scopes if s is not None]
    if not bounds:
        return None
    out = bounds[0]
    for bound in bounds[1:]:
        out = out & bound
    return frozenset(out)


def call_tool(agent: str, name: str, args: Any, registry: ToolRegistry | None = None, *,
              scope: frozenset[str] | None = None) -> Outcome:
    """The one path from any framework to a tool: budget, trace, gate (inside the registry), record. `scope` (from
    the adapter builder) and the run's scope both bound the call: the registry gets their intersection. Raises
    `BudgetExceeded` (agents/budgets.py) when the run's tool budgets are spent: the run's driver ends the run."""
    from autooptimizer.settings import get_settings
    from autooptimizer.tracing import active_trace_id, span

    registry = registry or REGISTRY
    ensure_traced(registry)
    ctx = current_run()
    if ctx.budget is not None:  # the run's tool-call and loop budgets; over them the call is not made (raises)
        ctx.budget.charge_tool(agent, name, args)
    env = ctx.env or get_settings().env
    approval_id = (_granted_for(registry, agent, name, cast("dict[str, Any]", args), env, ctx.granted)
                   if isinstance(args, dict) else None)
    evidence = {"goal": ctx.goal[:500], "agent": agent,
                "earlier_results": [{"tool": o.tool, "result": preview(o.result, 300)}
                                    for o in ctx.calls if o.executed and not o.error][-3:]}
    inputs: dict[str, Any] = {"agent": agent, "args": args}
    with span(f"tool:{name}", kind="tool", inputs=inputs, agent=agent) as sp:
        res = registry.call(agent, name, args, env=env, trace_id=active_trace_id(), approval_id=approval_id,
                            requested_by=f"agent:{agent}", evidence=evidence, scope=effective_scope(scope, ctx.scope),
                            sample_source=ctx.sample_source)
        outcome = Outcome(tool=name, agent=agent, args=res.args, decision=res.decision, executed=res.executed,
                          result=res.result, error=res.error, reason=res.reason, approval_id=res.approval_id,
                          policies=list(res.policies))
        sp.set_outputs({**outcome.model_dump(exclude={"args", "result"}), "result": res.result})
        sp.summary(f"{res.decision}; executed={res.executed}" + (f"; error: {res.error[:120]}" if res.error else ""))
        if res.error:
            sp.set("tool.error", res.error[:500])
    with ctx.lock:
        ctx.calls.append(outcome)
    return outcome


def outcome_text(outcome: Outcome) -> str:
    """What the model sees: the decision and, only when the tool ran, its result (as JSON; a result JSON cannot
    hold as it is - nested too deep, huge ints, lone surrogates - is shown in its `to_json_safe` form)."""
    try:
        return outcome.model_dump_json()
    except (ValueError, TypeError, RecursionError):  # pydantic's serialization errors are ValueErrors
        fields = {name: getattr(outcome, name) for name in type(outcome).model_fields}
        return json.dumps(to_json_safe(fields), ensure_ascii=False)
