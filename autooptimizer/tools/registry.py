"""The tool registry: the one gate between an agent and anything it can do.

Each tool is defined once — a plain function taking a pydantic args model, plus name, owner agent, risk and
description — and is reached only through `ToolRegistry.call`, which runs, in order:

1. shape and size checks, before anything recurses over the args: `autooptimizer.jsonsafe.check_json` walks them
   iteratively (JSON types only, str keys, finite numbers, ints of at most 64 bits, UTF-8-encodable strings,
   at most `MAX_DEPTH` = 32 levels, `MAX_ITEMS` = 1000 items per container, `MAX_STR` = 16384 characters per
   string) -> deny `registry.args-too-deep`, `registry.args-too-large` or `registry.invalid-args`; then args
   over `MAX_ARGS_BYTES` -> deny `registry.args-too-large`;
2. lookup (unknown tool -> deny) and pydantic validation (bad args -> deny with the validation errors);
3. context: `kill_switch` (from the kill-switch file), `approved` (only from an approval stored for THIS exact
   call: tool + canonical args + agent + env), `in_scope` (the tool is in the caller's `scope`, the tools the
   operator's intent allows this run; true for an unscoped trusted caller such as the loop), and the tool's
   `facts(args)` — trusted facts computed from typed args and system state, never parsed from free text.
   Agents cannot pass context in.
4. the Cedar PDP decides permit / deny / needs_approval for (agent, tool, env, context);
5. the decision is appended to the hash-chained audit log and sent to listeners;
6. needs_approval -> a durable approval request (reused if one is already pending for the same call);
   permit -> the approval (if any) is consumed, the function runs, and a result summary is audited.

Defining a tool (in `autooptimizer/tools/<area>.py`)::

    class DeployCanaryArgs(BaseModel):
        model_version: str
        weight: float = Field(ge=0, le=1)

    @tool(name="deploy_canary", owner="devops", risk="change",
          facts=lambda a: {"canary_weight": a.weight})
    def deploy_canary(args: DeployCanaryArgs) -> dict:
        "Route `weight` of traffic to the challenger."
        ...

Calling it::

    from autooptimizer.tools import load_all_tools
    res = load_all_tools().call("devops", "deploy_canary", {"model_version": "3", "weight": 0.2})
    res.decision, res.executed, res.result, res.approval_id

Facts a tool may supply (everything else is rejected): `ab_passed`, `target_is_gold` (bool) and
`canary_weight`, `budget_remaining`, `estimated_cost` (numbers). A fact left out is false/absent for the PDP.
Every tool must also be listed in `autooptimizer/policies/catalog.yaml` with the same owner and risk; a tool
missing there is an unknown tool to the PDP and is denied.

Whatever the arguments, `call` ends in exactly one decision and one `decision` audit record and never raises:
an unexpected failure before the decision is recorded becomes a deny (`registry.internal-error`, or
`registry.audit-unavailable` when the audit log refused the write), recorded when the log can be written.

Tracing hook: `registry.add_listener(fn)`; `fn(event: ToolEvent)` is called once with phase "decision" and,
when the tool ran, once with phase "result". Listener errors are logged and never affect the call.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_type_hints

from pydantic import BaseModel, ConfigDict, ValidationError

from autooptimizer.errors import AutoOptError, ConfigError, NotFoundError
from autooptimizer.jsonsafe import LIMITS_TEXT, JsonProblem, check_json, safe_label, to_json_safe
from autooptimizer.tools.context import current_cycle_id, current_env, current_trace_id

log = logging.getLogger(__name__)

Risk = Literal["read", "change", "critical"]
DecisionKind = Literal["permit", "deny", "needs_approval"]
AGENTS = ("supervisor", "metrics", "data", "ml", "devops")
TOOL_MODULES = ("metrics", "data", "ml", "devops")
MAX_ARGS_BYTES = 64 * 1024
BOOL_FACTS = ("ab_passed", "target_checked", "target_is_gold", "target_is_champion", "target_is_serving",
              "target_is_canary", "target_is_safe_point", "target_in_rollback_window", "alias_consistent")
NUMBER_FACTS = ("canary_weight", "budget_remaining", "estimated_cost")


class ToolSpec(BaseModel):
    """One tool, defined once; the framework adapters wrap this, never the bare function."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str
    description: str
    risk: Risk
    owner: str
    args_model: type[BaseModel]
    func: Callable[[BaseModel], Any]
    facts: Callable[[BaseModel], dict] | None = None

    def json_schema(self) -> dict:
        """The args JSON schema, for LLM function-calling adapters."""
        return self.args_model.model_json_schema()


class ToolCallResult(BaseModel):
    """What happened to one call: the decision, and the result only when the tool actually ran."""

    tool: str
    agent: str
    args: dict
    decision: DecisionKind
    policies: list[str]
    reason: str
    executed: bool
    result: Any = None
    error: str | None = None
    approval_id: str | None = None
    trace_id: str | None = None
    cycle_id: str | None = None
    env: str | None = None

    @property
    def ok(self) -> bool:
        return self.executed and self.error is None


class ToolEvent(BaseModel):
    """Sent to listeners: phase "decision" for every call, then "result" when the tool ran."""

    phase: Literal["decision", "result"]
    call: ToolCallResult
    context: dict
    started_at: float
    duration_ms: float


Listener = Callable[[ToolEvent], None]


def _args_model_of(func: Callable) -> type[BaseModel]:
    params = list(inspect.signature(func).parameters.values())
    if len(params) != 1:
        raise ConfigError(f"Tool function {func.__qualname__} must take exactly one argument (its args model).",
                          "Define `def f(args: SomeArgs) -> dict` with SomeArgs a pydantic BaseModel.")
    hints = get_type_hints(func)
    model = hints.get(params[0].name)
    if not (inspect.isclass(model) and issubclass(model, BaseModel)):
        raise ConfigError(f"Tool function {func.__qualname__}: argument {params[0].name!r} is not typed with a "
                          "pydantic model.", "Annotate it, e.g. `args: DeployCanaryArgs`.")
    return model


def _first_doc_line(func: Callable) -> str:
    doc = inspect.getdoc(func) or ""
    return doc.strip().split("\n\n")[0].replace("\n", " ")


def _summary(value: Any, limit: int = 2000) -> Any:
    """A JSON-safe, size-bounded summary for the audit log."""
    text = json.dumps(to_json_safe(value), sort_keys=True)  # bounded and iterative: never raises
    if len(text) <= limit:
        return json.loads(text)
    return {"truncated": True, "bytes": len(text), "head": text[:limit]}


def _shown_args(args: Any) -> dict:
    """What the audit shows of arguments the gate refused: a bounded, JSON-safe summary, always an object."""
    if isinstance(args, dict):
        shown = _summary(args, 2000)
        return shown if isinstance(shown, dict) else {"value": shown}
    return {"value": _summary(args, 200)}


def clean_facts(tool: str, raw: Any) -> dict:
    """Check a tool's facts: only known keys, right types, finite numbers. Anything else is a bug -> deny."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ValueError(f"facts for {tool} must be a dict, got {type(raw).__name__}")
    out: dict = {}
    for key, value in raw.items():
        if key in BOOL_FACTS:
            if not isinstance(value, bool):
                raise ValueError(f"fact {key!r} must be a bool, got {value!r}")
            out[key] = value
        elif key in NUMBER_FACTS:
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"fact {key!r} must be a finite number, got {value!r}")
            out[key] = float(value)
        else:
            raise ValueError(f"fact {key!r} is not a fact a tool may supply (allowed: {BOOL_FACTS + NUMBER_FACTS})")
    return out


def _consume(store: Any, approval_id: str | None, chash: str) -> bool:
    """Use the approval once; an approval store that cannot be written counts as "not usable" (nothing runs)."""
    try:
        return bool(approval_id) and store.consume(approval_id, chash)
    except Exception:  # noqa: BLE001 - fail closed
        log.exception("could not consume approval %s", approval_id)
        return False


@dataclass
class _Prepared:
    spec: ToolSpec
    model: BaseModel
    canon: dict
    facts: dict


@dataclass
class _Rejection:
    policies: list[str]
    reason: str
    error: str
    shown_args: dict


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

    def unregister(self, name: str) -> None:
        """Remove a tool (tests)."""
        with self._lock:
            self._tools.pop(name, None)

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
        args: dict | None,
        *,
        env: str | None = None,
        trace_id: str | None = None,
        approval_id: str | None = None,
        requested_by: str = "agent",
        evidence: dict | None = None,
        cycle_id: str | None = None,
        scope: frozenset[str] | None = None,
    ) -> ToolCallResult:
        """Validate, decide, audit, and run only on permit. Never raises for a denied or failing call.

        `scope`: the tools this run may use (from the operator's intent, see agents/intent.py); None = an unscoped
        trusted caller. The registry turns it into the `in_scope` fact; the PDP denies change/critical tools
        outside it.
        """
        from autooptimizer.settings import get_settings

        started = time.time()
        t0 = time.perf_counter()
        env = env or get_settings().env
        env_token = current_env.set(env)  # tools and their facts act on the env of this call
        recorded: list[ToolCallResult] = []  # the decision once it is on record (set by `_call`)
        try:
            return self._call(agent, name, args, env=env, trace_id=trace_id, approval_id=approval_id,
                              requested_by=requested_by, evidence=evidence, cycle_id=cycle_id, started=started, t0=t0,
                              in_scope=scope is None or (isinstance(name, str) and name in frozenset(scope)),
                              recorded=recorded)
        except Exception as exc:  # noqa: BLE001 - the gate never raises: an unexpected failure is a recorded deny
            return self._failed(exc, recorded, agent, name, args, env=env, trace_id=trace_id,
                                approval_id=approval_id, requested_by=requested_by, cycle_id=cycle_id,
                                started=started, t0=t0)
        finally:
            current_env.reset(env_token)

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
        res = ToolCallResult(tool=safe_label(name), agent=safe_label(agent), args=_shown_args(args), decision="deny",
                             policies=[policy], reason=reason, executed=False, error=safe_label(error, 1000),
                             approval_id=approval_id if isinstance(approval_id, str) else None,
                             trace_id=trace_id if isinstance(trace_id, str) else None,
                             cycle_id=cycle_id if isinstance(cycle_id, str) else None, env=env)
        if not audit_down:
            try:
                AuditLog().append_call("decision", res, context={}, actor=safe_label(requested_by), pdp=None)
            except Exception as audit_exc:  # noqa: BLE001 - nothing ran; say why it is not on record either
                res.policies, res.reason = ["registry.audit-unavailable"], "the audit log cannot be written"
                res.error = safe_label(f"{res.error} The audit log could not record it: {audit_exc}", 1000)
        self._emit("decision", res, {}, started, t0)
        return res

    def _call(self, agent: str, name: str, args: dict | None, *, env: str, trace_id: str | None,
              approval_id: str | None, requested_by: str, evidence: dict | None, cycle_id: str | None,
              started: float, t0: float, in_scope: bool, recorded: list[ToolCallResult]) -> ToolCallResult:
        from autooptimizer.policies.approvals import ApprovalStore, call_hash
        from autooptimizer.policies.audit import AuditError, AuditLog
        from autooptimizer.policies.killswitch import kill_switch
        from autooptimizer.policies.pdp import get_pdp

        trace_id = trace_id or current_trace_id.get() or uuid.uuid4().hex
        cycle_id = cycle_id or current_cycle_id.get()
        audit = AuditLog()
        base = {"tool": safe_label(name), "agent": safe_label(agent), "trace_id": trace_id, "cycle_id": cycle_id,
                "env": env}

        def record(res: ToolCallResult, context: dict, pdp: dict | None) -> ToolCallResult:
            """Audit the decision; if the audit log cannot be written, nothing may run."""
            try:
                audit.append_call("decision", res, context=context, actor=requested_by, pdp=pdp)
            except (AuditError, OSError) as exc:
                res.decision, res.policies, res.executed = "deny", ["registry.audit-unavailable"], False
                res.reason = "the audit log cannot be written, so nothing may run"
                res.error = f"Audit log unavailable: {exc}. Nothing ran; run `autoopt audit verify`."
            else:
                recorded.append(res)
            self._emit("decision", res, context, started, t0)
            return res

        def finish_denied(policies: list[str], reason: str, error: str, shown_args: dict) -> ToolCallResult:
            res = ToolCallResult(**base, args=shown_args, decision="deny", policies=policies, reason=reason,
                                 executed=False, error=error, approval_id=approval_id)
            return record(res, {}, None)

        prep = self._prepare(name, args)
        if isinstance(prep, _Rejection):
            return finish_denied(prep.policies, prep.reason, prep.error, prep.shown_args)
        spec, model, canon, facts = prep.spec, prep.model, prep.canon, prep.facts
        base_args = canon

        # trusted context: facts + kill switch + an approval bound to this exact call
        chash = call_hash(name, canon, agent, env)
        approved, approval_note = False, None
        try:
            store = ApprovalStore()
            if approval_id:
                approved, approval_note = store.check(approval_id, chash)
            context = {**facts, "kill_switch": kill_switch.is_on(), "approved": approved, "in_scope": in_scope}
        except Exception as exc:  # noqa: BLE001 - an unreadable approval store never reads as "no approval needed"
            return finish_denied(["registry.context-unavailable"], "the approval store could not be read",
                                 f"Reading the approval store failed ({type(exc).__name__}: {exc}). Nothing ran; "
                                 "check AUTOOPT_HOME/approvals.db.", base_args)

        # decide
        try:
            decision = get_pdp(env).decide(agent, name, context)
        except AutoOptError as exc:
            return finish_denied(["registry.policies-unavailable"], "the policies could not be loaded",
                                 f"{exc.problem} Nothing ran.", base_args)
        res = ToolCallResult(**base, args=base_args, decision=decision.decision, policies=decision.policies,
                             reason=decision.reason, executed=False, approval_id=approval_id,
                             error=approval_note if approval_id and not approved else None)

        if decision.decision == "needs_approval":
            try:
                req = store.request_or_reuse(tool=name, agent=agent, env=env, args=canon, call_hash_=chash,
                                             reason=decision.reason, policies=decision.policies, evidence=evidence,
                                             requested_by=requested_by, trace_id=trace_id, cycle_id=cycle_id)
            except Exception as exc:  # noqa: BLE001 - a request that cannot be stored is a denial, not a crash
                return finish_denied(["registry.context-unavailable"], "the approval request could not be stored",
                                     f"Storing the approval request failed ({type(exc).__name__}: {exc}). Nothing "
                                     "ran; check AUTOOPT_HOME/approvals.db.", base_args)
            res.approval_id = req.id
            res.error = ((f"{approval_note} " if approval_note else "")
                         + f"Needs approval: {decision.reason}. Request {req.id} is waiting; approve it with "
                         f"`autoopt approvals approve {req.id}`, then repeat the call with approval_id={req.id}.")
        elif decision.decision == "permit" and approved and not _consume(store, approval_id, chash):
            res.decision, res.policies = "deny", ["registry.approval-used"]
            res.reason = "the approval for this call was already used"
            res.error = f"Approval {approval_id} was already used or expired; nothing ran."
        elif decision.decision == "deny" and not res.error:
            res.error = f"Denied: {decision.reason}."
        record(res, context, {"decision": decision.decision, "policies": decision.policies})
        if res.decision != "permit":
            return res

        # 5. run
        try:
            res.result = spec.func(model)
        except AutoOptError as exc:
            res.error = f"{exc.problem}" + (f" Fix: {exc.fix}" if exc.fix else "")
        except Exception as exc:  # noqa: BLE001 - a tool failure is a result, reported and audited
            res.error = f"{type(exc).__name__}: {exc}"
        res.executed = True
        try:
            audit.append_call("result", res, context=context, actor=requested_by, result_summary=_summary(res.result))
        except Exception as exc:  # noqa: BLE001 - the tool ran; a failed result record must not undo that
            log.error("could not audit the result of %s: %s", safe_label(name), exc)
        self._emit("result", res, context, started, t0)
        return res

    def _prepare(self, name: str, args: Any) -> _Prepared | _Rejection:
        """Shape and size checks, lookup, validation and facts: everything that happens before the PDP is asked."""
        problem = check_json(args if args is not None else {})  # iterative: first, before anything recurses
        if problem is not None and not problem.late:
            return self._refused(name, problem, args)
        try:
            raw_text = json.dumps(args if args is not None else {}, default=str)
        except (TypeError, ValueError) as exc:
            return _Rejection(["registry.invalid-args"], "arguments are not JSON data",
                              f"Arguments for {name} are not JSON-serialisable: {exc}. Nothing ran.", {})
        size = len(raw_text.encode())
        if size > MAX_ARGS_BYTES:
            return _Rejection(["registry.args-too-large"], f"arguments are {size} bytes; the limit is {MAX_ARGS_BYTES}",
                              f"Arguments for {name} are {size} bytes, over the {MAX_ARGS_BYTES}-byte limit; nothing "
                              "ran. Pass references (paths, ids), not data.", {"truncated": True, "bytes": size})
        if problem is not None:  # a string over the length limit in args under the byte limit
            return self._refused(name, problem, args)
        if args is not None and not isinstance(args, dict):
            return _Rejection(["registry.invalid-args"], "arguments must be a JSON object",
                              f"Arguments for {name} must be an object, got {type(args).__name__}. Nothing ran.",
                              _shown_args(args))
        args = args or {}
        spec = self._tools.get(name)
        if spec is None:
            shown = safe_label(name)
            return _Rejection(["registry.unknown-tool"], f"unknown tool {shown!r}",
                              f"Unknown tool {shown!r}; nothing ran. Known tools: {', '.join(sorted(self._tools))}.",
                              _summary(args, 2000))
        try:
            model = spec.args_model.model_validate(args)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(args)'}: {e['msg']}" for e in exc.errors())
            problems = problems if len(problems) <= 2000 else problems[:2000] + "…"
            return _Rejection(["registry.invalid-args"], "arguments failed validation",
                              f"Invalid arguments for {name}: {problems}. Nothing ran.", _summary(args, 2000))
        canon = model.model_dump(mode="json")
        try:
            facts = clean_facts(name, spec.facts(model) if spec.facts else None)
        except Exception as exc:  # noqa: BLE001 - any failure computing facts must deny, not crash
            return _Rejection(["registry.facts-error"], "could not compute the policy facts for this call",
                              f"Computing policy facts for {name} failed: {exc}. Nothing ran.", canon)
        return _Prepared(spec, model, canon, facts)

    @staticmethod
    def _refused(name: str, problem: JsonProblem, args: Any) -> _Rejection:
        return _Rejection([problem.policy], problem.reason,
                          f"Arguments for {safe_label(name)} {problem.detail}. Nothing ran. Send {LIMITS_TEXT}; pass "
                          "references (paths, ids), not data.", _shown_args(args))

    def facts_for(self, name: str, args: Any) -> tuple[dict, _Rejection | None]:
        """The facts the registry would compute for this call, or why it would stop before asking the PDP
        (`.policies`, `.reason`, `.error`). Used by `autoopt policy check`; it never runs the tool.
        """
        prep = self._prepare(name, args)
        if isinstance(prep, _Rejection):
            return {}, prep
        return prep.facts, None

    def _emit(self, phase: Literal["decision", "result"], res: ToolCallResult, context: dict, started: float,
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
    facts: Callable[[Any], dict] | None = None,
    registry: ToolRegistry | None = None,
) -> Callable[[Callable], Callable]:
    """Decorator: register `def f(args: SomeArgsModel) -> dict | BaseModel` (args model from the type hint).

    The function is returned unchanged (so it can be unit-tested directly); agents reach it only via the
    registry. `description` defaults to the docstring's first paragraph.
    """

    def wrap(func: Callable) -> Callable:
        spec = ToolSpec(name=name, owner=owner, risk=risk, description=description or _first_doc_line(func) or name,
                        args_model=_args_model_of(func), func=func, facts=facts)
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
