"""The tool registry: the one gate between an agent and anything it can do.

Each tool is defined once — a plain function taking a pydantic args model, plus name, owner agent, risk and
description — and is reached only through `ToolRegistry.call`, which runs the stages of `tools/gate.py`, in order:

1. shape and size checks, before anything recurses over the args: `autooptimizer.jsonsafe.check_json` walks them
   iteratively (JSON types only, str keys, finite numbers, ints of at most 64 bits, UTF-8-encodable strings,
   at most `MAX_DEPTH` = 32 levels, `MAX_ITEMS` = 1000 items per container, `MAX_STR` = 16384 characters per
   string) -> deny `registry.args-too-deep`, `registry.args-too-large` or `registry.invalid-args`; then args
   over `MAX_ARGS_BYTES` -> deny `registry.args-too-large`;
2. lookup (unknown tool -> deny) and pydantic validation (bad args -> deny with the validation errors);
3. context: `kill_switch` (from the kill-switch file), `approved` (only from an approval stored for THIS exact
   call: tool + canonical args + agent + env), `in_scope` (the tool is in the caller's `scope`, the tools the
   operator's intent allows this run; true for an unscoped trusted caller such as the loop), and the tool's
   `facts(args, ctx)` — trusted facts (`policies/facts.py: ToolFacts`) computed from typed args and system
   state, never parsed from free text. Agents cannot pass context in.
4. the Cedar PDP decides permit / deny / needs_approval for (agent, tool, env, context);
5. the decision is appended to the hash-chained audit log and sent to listeners;
6. needs_approval -> a durable approval request (reused if one is already pending for the same call);
   permit -> the approval (if any) is consumed, the function runs, and a result summary is audited.

Defining a tool (in `autooptimizer/tools/<area>.py`)::

    class DeployCanaryArgs(BaseModel):
        model_version: str
        weight: float = Field(ge=0, le=1)

    @tool(name="deploy_canary", owner="devops", risk="change",
          facts=lambda a, ctx: {"canary_weight": a.weight})
    def deploy_canary(args: DeployCanaryArgs, ctx: ToolContext) -> dict[str, Any]:
        "Route `weight` of traffic to the challenger."
        ctx.release().deploy(...)  # what the call acts on comes in `ctx` (tools/context.py)

Calling it::

    from autooptimizer.tools import load_all_tools
    res = load_all_tools().call("devops", "deploy_canary", {"model_version": "3", "weight": 0.2})
    res.decision, res.executed, res.result, res.approval_id

The registry builds one `ToolContext` per call (env, cycle id, trace id, settings, profile, release, sample
source) from its caller's arguments and passes it to the tool's `facts` and to the tool. Facts a tool may supply
are the fields of `ToolFacts` (everything else is rejected); a fact left out is false/absent for the PDP.
Every tool must also be listed in `autooptimizer/policies/catalog.yaml` with the same owner and risk; a tool
missing there is an unknown tool to the PDP and is denied.

Whatever the arguments, `call` ends in exactly one decision and one `decision` audit record and never raises:
an unexpected failure before the decision is recorded becomes a deny (`registry.internal-error`, or
`registry.audit-unavailable` when the audit log refused the write), recorded when the log can be written.

Tracing hook: `registry.add_listener(fn)`; `fn(event: ToolEvent)` is called once with phase "decision" and,
when the tool ran, once with phase "result". Listener errors are logged and never affect the call.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Literal, TypeVar, cast

from pydantic import BaseModel

from autooptimizer.errors import ConfigError, NotFoundError
from autooptimizer.jsonsafe import safe_label
from autooptimizer.tools import gate
from autooptimizer.tools.context import ToolContext, current_trace_id
from autooptimizer.tools.gate import MAX_ARGS_BYTES, Rejection
from autooptimizer.tools.spec import (
    DecisionKind,
    FactsFunc,
    Listener,
    Risk,
    ToolCallResult,
    ToolEvent,
    ToolSpec,
    args_model_of,
    first_doc_line,
)

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

AGENTS = ("supervisor", "metrics", "data", "ml", "devops")
TOOL_MODULES = ("metrics", "data", "ml", "devops", "storage")
__all__ = ["AGENTS", "MAX_ARGS_BYTES", "REGISTRY", "DecisionKind", "PolicyCheck", "Risk", "ToolCallResult",
           "ToolEvent", "ToolRegistry", "ToolSpec", "load_all_tools", "tool"]


class PolicyCheck(BaseModel):
    """What `ToolRegistry.decide` answers: the decision and the context it was made on."""

    decision: DecisionKind
    policies: list[str]
    reason: str
    context: dict[str, Any]
    pdp: dict[str, Any] | None = None


class ToolRegistry:
    """Holds the tool specs; `call` is the only way the product runs a tool."""

    def __init__(self) -> None:
        self._tools: dict[str, ToolSpec] = {}
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()

    # --- definition -------------------------------------------------------------------------------------------
    def register(self, spec: ToolSpec) -> ToolSpec:
        """Add a tool. Owner/risk must match the policy catalogue when the tool is listed there."""
        if spec.owner not in AGENTS or spec.owner == "supervisor":
            raise ConfigError(f"Tool {spec.name}: owner {spec.owner!r} is not a tool-owning agent.",
                              "Use one of metrics, data, ml, devops.")
        from autooptimizer.policies.catalog import load_catalog

        entry = load_catalog().tools.get(spec.name)
        if entry is None:
            log.warning("tool %s is not in policies/catalog.yaml: the PDP will deny every call to it", spec.name)
        elif (entry.owner, entry.risk) != (spec.owner, spec.risk):
            raise ConfigError(
                f"Tool {spec.name} declares owner={spec.owner} risk={spec.risk}, but the policy catalogue says "
                f"owner={entry.owner} risk={entry.risk}.",
                "Make the @tool declaration match autooptimizer/policies/catalog.yaml (the catalogue wins).",
            )
        with self._lock:
            existing = self._tools.get(spec.name)
            if existing is not None and existing.func is not spec.func and (
                existing.func.__module__, existing.func.__qualname__) != (spec.func.__module__, spec.func.__qualname__):
                raise ConfigError(f"Tool {spec.name} is defined twice ({existing.func.__module__} and "
                                  f"{spec.func.__module__}).", "Give each tool one definition.")
            self._tools[spec.name] = spec
        return spec

    def get(self, name: str) -> ToolSpec:
        try:
            return self._tools[name]
        except KeyError:
            raise NotFoundError(f"Unknown tool {name!r}.", f"Known tools: {', '.join(sorted(self._tools))}.") from None

    def all(self) -> list[ToolSpec]:
        return sorted(self._tools.values(), key=lambda s: s.name)

    def for_agent(self, agent: str) -> list[ToolSpec]:
        return [s for s in self.all() if s.owner == agent]

    def add_listener(self, fn: Listener) -> Callable[[], None]:
        """Register a tracing/observer hook; returns a function that removes it."""
        with self._lock:
            self._listeners.append(fn)

        def remove() -> None:
            with self._lock:
                if fn in self._listeners:
                    self._listeners.remove(fn)

        return remove

    # --- the gate ---------------------------------------------------------------------------------------------
    def call(
        self,
        agent: str,
        name: str,
        args: Any,
        *,
        env: str | None = None,
        trace_id: str | None = None,
        approval_id: str | None = None,
        requested_by: str = "agent",
        evidence: dict[str, Any] | None = None,
        cycle_id: str | None = None,
        scope: frozenset[str] | None = None,
        sample_source: Any = None,
        release: Any = None,
    ) -> ToolCallResult:
        """Validate, decide, audit, and run only on permit. Never raises for a denied or failing call.

        `env`, `cycle_id`, `trace_id`, `sample_source` and `release` become the call's `ToolContext` (the cycle
        passes its own source and release, so its A/B tool and its watch read the same numbers). `scope`: the tools
        this run may use (from the operator's intent, see agents/intent.py); None = an unscoped trusted caller. The
        registry turns it into the `in_scope` fact; the PDP denies change/critical tools outside it.
        """
        from autooptimizer.settings import get_settings

        started = time.time()
        t0 = time.perf_counter()
        settings = get_settings()
        env = env or settings.env
        recorded: list[ToolCallResult] = []  # the decision once it is on record (set by `_call`)
        try:
            ctx = ToolContext(env=env, settings=settings, cycle_id=cycle_id, sample_source=sample_source,
                              release_=release, trace_id=trace_id or current_trace_id.get() or uuid.uuid4().hex)
            return self._call(agent, name, args, ctx, approval_id=approval_id, requested_by=requested_by,
                              evidence=evidence, started=started, t0=t0, recorded=recorded,
                              in_scope=scope is None or (isinstance(cast(object, name), str) and name in scope))
        except Exception as exc:  # noqa: BLE001 - the gate never raises: an unexpected failure is a recorded deny
            return self._failed(exc, recorded, agent, name, args, env=env, trace_id=trace_id,
                                approval_id=approval_id, requested_by=requested_by, cycle_id=cycle_id,
                                started=started, t0=t0)

    def _failed(self, exc: Exception, recorded: list[ToolCallResult], agent: Any, name: Any, args: Any, *, env: str,
                trace_id: str | None, approval_id: str | None, requested_by: str, cycle_id: str | None,
                started: float, t0: float) -> ToolCallResult:
        """The deny for a call that failed unexpectedly; audited unless its decision is already on record."""
        from autooptimizer.policies.audit import AuditError, AuditLog

        if recorded:  # decided and audited already; report the failure without a second decision record
            res = recorded[0]
            res.error = (res.error + " " if res.error else "") + f"Internal error after the decision: {exc!r}"[:500]
            return res
        audit_down = isinstance(exc, AuditError | OSError)
        log.error("tool call %s by %s failed before its decision was recorded: %r", safe_label(name),
                  safe_label(agent), exc)
        if audit_down:
            policy, reason = "registry.audit-unavailable", "the audit log cannot be written, so nothing may run"
            error = f"Audit log unavailable: {exc}. Nothing ran; run `autoopt audit verify`."
        else:
            policy, reason = "registry.internal-error", "the call failed inside the gate before a decision"
            error = f"Internal error before the decision ({type(exc).__name__}: {exc}). Nothing ran."
        res = ToolCallResult(tool=safe_label(name), agent=safe_label(agent), args=gate.shown_args(args),
                             decision="deny", policies=[policy], reason=reason, executed=False,
                             error=safe_label(error, 1000),
                             approval_id=approval_id if isinstance(approval_id, str) else None,
                             trace_id=trace_id if isinstance(trace_id, str) else None,
                             cycle_id=cycle_id if isinstance(cycle_id, str) else None, env=env)
        if not audit_down:
            try:
                gate.record(AuditLog(), "decision", res, context={}, actor=safe_label(requested_by), pdp=None)
            except Exception as audit_exc:  # noqa: BLE001 - nothing ran; say why it is not on record either
                res.policies, res.reason = ["registry.audit-unavailable"], "the audit log cannot be written"
                res.error = safe_label(f"{res.error} The audit log could not record it: {audit_exc}", 1000)
        self._emit("decision", res, {}, started, t0)
        return res

    def _call(self, agent: str, name: str, args: Any, ctx: ToolContext, *, approval_id: str | None,
              requested_by: str, evidence: dict[str, Any] | None, started: float, t0: float, in_scope: bool,
              recorded: list[ToolCallResult]) -> ToolCallResult:
        """prepare -> facts -> context -> decide -> record -> execute (tools/gate.py)."""
        from autooptimizer.policies.audit import AuditError, AuditLog

        audit = AuditLog()
        base: dict[str, Any] = {"tool": safe_label(name), "agent": safe_label(agent), "trace_id": ctx.trace_id,
                                "cycle_id": ctx.cycle_id, "env": ctx.env}

        def on_record(res: ToolCallResult, context: dict[str, Any], pdp: dict[str, Any] | None) -> ToolCallResult:
            """Audit the decision; if the audit log cannot be written, nothing may run."""
            try:
                gate.record(audit, "decision", res, context=context, actor=requested_by, pdp=pdp)
            except (AuditError, OSError) as exc:
                res.decision, res.policies, res.executed = "deny", ["registry.audit-unavailable"], False
                res.reason = "the audit log cannot be written, so nothing may run"
                res.error = f"Audit log unavailable: {exc}. Nothing ran; run `autoopt audit verify`."
            else:
                recorded.append(res)
            self._emit("decision", res, context, started, t0)
            return res

        def denied(rej: Rejection, shown: dict[str, Any] | None = None) -> ToolCallResult:
            res = ToolCallResult(**base, args=rej.shown_args if shown is None else shown, decision="deny",
                                 policies=rej.policies, reason=rej.reason, executed=False, error=rej.error,
                                 approval_id=approval_id)
            return on_record(res, {}, None)

        prep = gate.prepare(self._tools, name, args)
        if isinstance(prep, Rejection):
            return denied(prep)
        facts = gate.tool_facts(prep, ctx)
        if isinstance(facts, Rejection):
            return denied(facts)
        check = gate.read_approval(name, prep.canon, agent, ctx.env, approval_id)
        if isinstance(check, Rejection):
            return denied(check)
        context = gate.policy_context(facts, approved=check.approved, in_scope=in_scope)
        decision = gate.decide(ctx.env, agent, name, context)
        if isinstance(decision, Rejection):
            return denied(decision, prep.canon)
        res = ToolCallResult(**base, args=prep.canon, decision=decision.decision, policies=decision.policies,
                             reason=decision.reason, executed=False, approval_id=approval_id,
                             error=check.note if approval_id and not check.approved else None)
        stop = self._settle_approval(res, prep, check, decision, ctx, agent, approval_id, requested_by, evidence)
        if stop is not None:
            return denied(stop, prep.canon)
        on_record(res, context, {"decision": decision.decision, "policies": decision.policies})
        if res.decision != "permit":
            return res
        res.result, res.error = gate.execute(prep, ctx)
        res.executed = True
        try:
            gate.record(audit, "result", res, context=context, actor=requested_by,
                        result_summary=gate.summary(res.result))
        except Exception as exc:  # noqa: BLE001 - the tool ran; a failed result record must not undo that
            log.error("could not audit the result of %s: %s", safe_label(name), exc)
        self._emit("result", res, context, started, t0)
        return res

    @staticmethod
    def _settle_approval(res: ToolCallResult, prep: gate.Prepared, check: gate.ApprovalCheck, decision: Any,
                         ctx: ToolContext, agent: str, approval_id: str | None, requested_by: str,
                         evidence: dict[str, Any] | None) -> Rejection | None:
        """needs_approval -> a durable request (reused while pending); permit on an approval -> consume it once."""
        if decision.decision == "needs_approval":
            try:
                req = check.store.request_or_reuse(
                    tool=prep.spec.name, agent=agent, env=ctx.env, args=prep.canon, call_hash_=check.call_hash,
                    reason=decision.reason, policies=decision.policies, evidence=evidence, requested_by=requested_by,
                    trace_id=ctx.trace_id, cycle_id=ctx.cycle_id)
            except Exception as exc:  # noqa: BLE001 - a request that cannot be stored is a denial, not a crash
                return Rejection(["registry.context-unavailable"], "the approval request could not be stored",
                                 f"Storing the approval request failed ({type(exc).__name__}: {exc}). Nothing ran; "
                                 "check AUTOOPT_HOME/approvals.db.", prep.canon)
            res.approval_id = req.id
            res.error = ((f"{check.note} " if check.note else "")
                         + f"Needs approval: {decision.reason}. Request {req.id} is waiting; approve it with "
                         f"`autoopt approvals approve {req.id}`, then repeat the call with approval_id={req.id}.")
        elif decision.decision == "permit" and check.approved and not gate.consume(check, approval_id):
            res.decision, res.policies = "deny", ["registry.approval-used"]
            res.reason = "the approval for this call was already used"
            res.error = f"Approval {approval_id} was already used or expired; nothing ran."
        elif decision.decision == "deny" and not res.error:
            res.error = f"Denied: {decision.reason}."
        return None

    def decide(self, agent: str, name: str, args: Any = None, *, env: str | None = None,
               overrides: dict[str, Any] | None = None, in_scope: bool = True) -> PolicyCheck:
        """What the gate would decide for this call, without recording or running anything (`autoopt policy check`).

        With `args`, they are prepared and the tool's facts computed as `call` would (an unknown tool skips the
        facts); `overrides` are an operator's what-if facts laid over the computed context. `approved` is false and
        the kill switch is read live."""
        from autooptimizer.policies.pdp import PolicyDecision
        from autooptimizer.settings import get_settings

        settings = get_settings()
        ctx = ToolContext(env=env or settings.env, settings=settings, trace_id=uuid.uuid4().hex)
        facts: dict[str, Any] = {}
        if args is not None:
            prep = gate.prepare(self._tools, name, args)
            got = prep if isinstance(prep, Rejection) else gate.tool_facts(prep, ctx)
            if isinstance(got, Rejection) and got.policies != ["registry.unknown-tool"]:
                return PolicyCheck(decision="deny", policies=got.policies, reason=got.error, context={})
            facts = got if isinstance(got, dict) else {}
        context = {**gate.policy_context(facts, approved=False, in_scope=in_scope), **(overrides or {})}
        decision = gate.decide(ctx.env, agent, name, context)
        if isinstance(decision, Rejection):
            decision = PolicyDecision(decision="deny", policies=decision.policies, reason=decision.error)
            return PolicyCheck(**decision.model_dump(), context=context)
        return PolicyCheck(**decision.model_dump(), context=context,
                           pdp={"decision": decision.decision, "policies": decision.policies})

    def facts_for(self, name: str, args: Any, *, env: str | None = None) -> tuple[dict[str, Any], Rejection | None]:
        """The facts the registry would compute for this call, or why it would stop before asking the PDP."""
        from autooptimizer.settings import get_settings

        settings = get_settings()
        prep = gate.prepare(self._tools, name, args)
        if isinstance(prep, Rejection):
            return {}, prep
        ctx = ToolContext(env=env or settings.env, settings=settings, trace_id=uuid.uuid4().hex)
        facts = gate.tool_facts(prep, ctx)
        return ({}, facts) if isinstance(facts, Rejection) else (facts, None)

    def _emit(self, phase: Literal["decision", "result"], res: ToolCallResult, context: dict[str, Any], started: float,
              t0: float) -> None:
        if not self._listeners:
            return
        event = ToolEvent(phase=phase, call=res.model_copy(), context=dict(context), started_at=started,
                          duration_ms=(time.perf_counter() - t0) * 1000)
        for fn in list(self._listeners):
            try:
                fn(event)
            except Exception:  # noqa: BLE001 - tracing must never change a call
                log.exception("tool listener %r failed", fn)


REGISTRY = ToolRegistry()


def tool(
    *,
    name: str,
    owner: str,
    risk: Risk,
    description: str | None = None,
    facts: FactsFunc | None = None,
    registry: ToolRegistry | None = None,
) -> Callable[[F], F]:
    """Decorator: register `def f(args: SomeArgsModel, ctx: ToolContext) -> dict[str, Any] | BaseModel` (the args
    model from the type hint; `facts(args, ctx) -> dict` supplies policy facts).

    The function is returned unchanged (so it can be unit-tested directly); agents reach it only via the
    registry. `description` defaults to the docstring's first paragraph.
    """

    def wrap(func: F) -> F:
        spec = ToolSpec(name=name, owner=owner, risk=risk, description=description or first_doc_line(func) or name,
                        args_model=args_model_of(func), func=func, facts=facts)
        (registry or REGISTRY).register(spec)
        func.tool_spec = spec  # type: ignore[attr-defined]
        return func

    return wrap


def load_all_tools() -> ToolRegistry:
    """Import the area tool modules (each registers its tools), load and validate every environment's policies,
    and return the global registry. Every entry point calls this at start, so a broken policy file stops startup
    with the file and the reason instead of surfacing on the first tool call."""
    import importlib

    from autooptimizer.policies.pdp import get_pdp
    from autooptimizer.settings import ENVIRONMENTS

    for mod in TOOL_MODULES:
        importlib.import_module(f"autooptimizer.tools.{mod}")
    for env in ENVIRONMENTS:
        get_pdp(env)
    return REGISTRY
