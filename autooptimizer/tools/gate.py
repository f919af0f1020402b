"""The stages of one gated tool call, each a small function testable alone:

    prepare -> facts -> context -> decide -> record -> execute

- `prepare`: shape and size checks before anything recurses over the args (`jsonsafe.check_json`: JSON types
  only, str keys, finite numbers, ints of at most 64 bits, UTF-8 strings, at most `MAX_DEPTH` levels, `MAX_ITEMS`
  per container, `MAX_STR` characters per string), the byte limit, lookup and pydantic validation;
- `tool_facts`: the tool's `facts(args, ctx)`, validated as `ToolFacts` (strict: unknown keys, wrong types and
  non-finite numbers deny);
- `read_approval` + `policy_context`: the kill switch, an approval stored for THIS exact call, `in_scope`;
  agents can never pass context in;
- `decide`: the Cedar PDP;
- `record`: one audit record per decision, and one per result (this module writes them; the audit module,
  which knows nothing of tool calls);
- `execute`: run the tool; its failure is a result, reported and audited.

A stage that cannot proceed returns a `Rejection` (policy id, reason, error): the registry turns it into a deny.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from pydantic import BaseModel, ValidationError

from autooptimizer.errors import AutoOptError
from autooptimizer.jsonsafe import LIMITS_TEXT, JsonProblem, check_json, safe_label, to_json_safe
from autooptimizer.policies.facts import ToolFacts
from autooptimizer.tools.context import ToolContext
from autooptimizer.tools.spec import ToolCallResult, ToolSpec

log = logging.getLogger(__name__)

MAX_ARGS_BYTES = 64 * 1024


@dataclass
class Rejection:
    """Why a call stops before (or instead of) the PDP's answer; the registry records it as a deny."""

    policies: list[str]
    reason: str
    error: str
    shown_args: dict[str, Any]


@dataclass
class Prepared:
    spec: ToolSpec
    model: BaseModel
    canon: dict[str, Any]


@dataclass
class ApprovalCheck:
    """An approval named by the call, checked against this exact call's hash."""

    store: Any
    call_hash: str
    approved: bool = False
    note: str | None = None


def summary(value: Any, limit: int = 2000) -> Any:
    """A JSON-safe, size-bounded summary for the audit log (bounded and iterative: never raises)."""
    text = json.dumps(to_json_safe(value), sort_keys=True)
    if len(text) <= limit:
        return json.loads(text)
    return {"truncated": True, "bytes": len(text), "head": text[:limit]}


def shown_args(args: Any) -> dict[str, Any]:
    """What the audit shows of arguments the gate refused: a bounded, JSON-safe summary, always an object."""
    if isinstance(args, dict):
        shown: Any = summary(args, 2000)
        return cast("dict[str, Any]", shown) if isinstance(shown, dict) else {"value": shown}
    return {"value": summary(args, 200)}


# --- prepare ------------------------------------------------------------------------------------------------------
def prepare(tools: Mapping[str, ToolSpec], name: str, args: Any) -> Prepared | Rejection:
    """Shape and size checks, lookup and validation: everything about the args before facts and the PDP."""
    problem = check_json(args if args is not None else {})  # iterative: first, before anything recurses
    if problem is not None and not problem.late:
        return _refused(name, problem, args)
    try:
        raw_text = json.dumps(args if args is not None else {}, default=str)
    except (TypeError, ValueError) as exc:
        return Rejection(["registry.invalid-args"], "arguments are not JSON data",
                         f"Arguments for {name} are not JSON-serialisable: {exc}. Nothing ran.", {})
    size = len(raw_text.encode())
    if size > MAX_ARGS_BYTES:
        return Rejection(["registry.args-too-large"], f"arguments are {size} bytes; the limit is {MAX_ARGS_BYTES}",
                         f"Arguments for {name} are {size} bytes, over the {MAX_ARGS_BYTES}-byte limit; nothing "
                         "ran. Pass references (paths, ids), not data.", {"truncated": True, "bytes": size})
    if problem is not None:  # a string over the length limit in args under the byte limit
        return _refused(name, problem, args)
    if args is not None and not isinstance(args, dict):
        return Rejection(["registry.invalid-args"], "arguments must be a JSON object",
                         f"Arguments for {name} must be an object, got {type(args).__name__}. Nothing ran.",
                         shown_args(args))
    fields = cast("dict[str, Any]", args or {})
    spec = tools.get(name)
    if spec is None:
        shown = safe_label(name)
        return Rejection(["registry.unknown-tool"], f"unknown tool {shown!r}",
                         f"Unknown tool {shown!r}; nothing ran. Known tools: {', '.join(sorted(tools))}.",
                         summary(fields, 2000))
    try:
        model = spec.args_model.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(args)'}: {e['msg']}" for e in exc.errors())
        problems = problems if len(problems) <= 2000 else problems[:2000] + "…"
        return Rejection(["registry.invalid-args"], "arguments failed validation",
                         f"Invalid arguments for {name}: {problems}. Nothing ran.", summary(fields, 2000))
    return Prepared(spec, model, model.model_dump(mode="json"))


def _refused(name: str, problem: JsonProblem, args: Any) -> Rejection:
    return Rejection([problem.policy], problem.reason,
                     f"Arguments for {safe_label(name)} {problem.detail}. Nothing ran. Send {LIMITS_TEXT}; pass "
                     "references (paths, ids), not data.", shown_args(args))


# --- facts and context --------------------------------------------------------------------------------------------
def tool_facts(prep: Prepared, ctx: ToolContext) -> dict[str, Any] | Rejection:
    """The tool's facts, validated as `ToolFacts`; only the keys it supplied (absent numbers left out)."""
    name = prep.spec.name
    try:
        raw = cast(object, prep.spec.facts(prep.model, ctx) if prep.spec.facts is not None else None)
        if raw is not None and not isinstance(raw, dict):  # a tool's facts are code, not data: check anyway
            raise ValueError(f"facts for {name} must be a dict, got {type(raw).__name__}")
        facts = ToolFacts.model_validate(raw or {})
        return facts.model_dump(exclude_unset=True, exclude_none=True)
    except ValidationError as exc:
        return Rejection(["registry.facts-error"], "the tool supplied facts the policies do not accept",
                         f"Computing policy facts for {name} failed: {_fact_problems(exc)}. Nothing ran.", prep.canon)
    except Exception as exc:  # noqa: BLE001 - any failure computing facts must deny, not crash
        return Rejection(["registry.facts-error"], "could not compute the policy facts for this call",
                         f"Computing policy facts for {name} failed: {exc}. Nothing ran.", prep.canon)


def _fact_problems(exc: ValidationError) -> str:
    """One clause per bad fact, in words (an unknown key, or the type it must have)."""
    out: list[str] = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            out.append(f"fact {key!r} is not a fact a tool may supply (allowed: {', '.join(ToolFacts.model_fields)})")
        else:
            out.append(f"fact {key!r}: {err['msg']}")
    return "; ".join(out)


def read_approval(tool: str, canon: dict[str, Any], agent: str, env: str,
                  approval_id: str | None) -> ApprovalCheck | Rejection:
    """Check the named approval against this exact call; an unreadable store never reads as "no approval needed"."""
    from autooptimizer.policies.approvals import ApprovalStore, call_hash

    chash = call_hash(tool, canon, agent, env)
    try:
        check = ApprovalCheck(store=ApprovalStore(), call_hash=chash)
        if approval_id:
            check.approved, check.note = check.store.check(approval_id, chash)
    except Exception as exc:  # noqa: BLE001 - fail closed
        return Rejection(["registry.context-unavailable"], "the approval store could not be read",
                         f"Reading the approval store failed ({type(exc).__name__}: {exc}). Nothing ran; check "
                         "AUTOOPT_HOME/approvals.db.", canon)
    return check


def policy_context(facts: dict[str, Any], *, approved: bool, in_scope: bool) -> dict[str, Any]:
    """The PDP's context: the tool's facts + the kill switch (read now) + `approved` + `in_scope`."""
    from autooptimizer.policies.killswitch import kill_switch

    return {**facts, "kill_switch": kill_switch.is_on(), "approved": approved, "in_scope": in_scope}


# --- decide -------------------------------------------------------------------------------------------------------
def decide(env: str, agent: str, tool: str, context: dict[str, Any]) -> Any:
    """The PDP's `PolicyDecision`, or a Rejection when the policies cannot be loaded."""
    from autooptimizer.policies.pdp import get_pdp

    try:
        return get_pdp(env).decide(agent, tool, context)
    except AutoOptError as exc:
        return Rejection(["registry.policies-unavailable"], "the policies could not be loaded",
                         f"{exc.problem} Nothing ran.", {})


# --- record -------------------------------------------------------------------------------------------------------
def record(audit: Any, phase: str, res: ToolCallResult, *, context: dict[str, Any], actor: str,
           pdp: dict[str, Any] | None = None, result_summary: Any = None) -> dict[str, Any]:
    """Append a registry decision (phase "decision") or a tool's outcome (phase "result") to the audit log.

    `pdp` is the PDP's own answer ({"decision", "policies"}), or None when the registry stopped the call before
    asking (bad args, unknown tool); `audit replay` re-checks only records that have it."""
    fields = {"kind": phase, "actor": actor, "agent": res.agent, "tool": res.tool, "env": res.env,
              "args": res.args, "decision": res.decision, "policies": res.policies, "reason": res.reason,
              "context": context, "pdp": pdp, "executed": res.executed, "error": res.error,
              "approval_id": res.approval_id, "trace_id": res.trace_id, "cycle_id": res.cycle_id}
    if phase == "result":
        fields["result"] = result_summary
    return audit.append(fields)


# --- execute ------------------------------------------------------------------------------------------------------
def execute(prep: Prepared, ctx: ToolContext) -> tuple[Any, str | None]:
    """Run the tool: (result, None), or (None, an error in words) - a tool failure is a result, not a raise."""
    try:
        return prep.spec.func(prep.model, ctx), None
    except AutoOptError as exc:
        return None, f"{exc.problem}" + (f" Fix: {exc.fix}" if exc.fix else "")
    except Exception as exc:  # noqa: BLE001 - reported and audited
        return None, f"{type(exc).__name__}: {exc}"


def consume(check: ApprovalCheck, approval_id: str | None) -> bool:
    """Use the approval once; a store that cannot be written counts as "not usable" (nothing runs)."""
    try:
        return bool(approval_id) and check.store.consume(approval_id, check.call_hash)
    except Exception:  # noqa: BLE001 - fail closed
        log.exception("could not consume approval %s", approval_id)
        return False
