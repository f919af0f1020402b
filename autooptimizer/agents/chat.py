"""`autoopt chat`: run a goal through the AutoGen team, stream the conversation, and pause as DATA.

A call that needs approval ends the run with status "paused": the team state and the pending approval ids are
saved under AUTOOPT_HOME/runs, nothing blocks. `resume_chat(APPROVAL_ID)` (or `autoopt chat --resume ID`) loads
the state, tells the paused agent the answer (RESUME block) and continues; the agent repeats the exact call,
and the adapter attaches the approval only to that exact call.

Before any model is asked, the goal's intent is read from the operator's own words (agents/intent.py): an attempt
to override instructions or policy ends the run as "refused" (audited, nothing runs); otherwise the intent's
allowed tools are the run's scope, carried by every registry call, so the PDP denies any change/critical tool the
goal did not ask for, whatever the model does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from autooptimizer.agents.budgets import RunUsage
from autooptimizer.agents.protocol import Outcome, Resume, parse_report, render_resume, wrap_goal
from autooptimizer.errors import InputError, NotFoundError
from autooptimizer.tools.registry import ToolRegistry


class ToolCallRecord(BaseModel):
    agent: str
    tool: str
    args: dict
    decision: str
    executed: bool
    approval_id: str | None = None
    error: str | None = None
    policies: list[str] = Field(default_factory=list)


class ChatResult(BaseModel):
    """The machine-readable run (`autoopt chat --json`)."""

    routed_to: str
    answer: str
    tool_calls: list[ToolCallRecord]
    pending_approvals: list[str]
    trace_id: str
    run_id: str
    status: Literal["completed", "paused", "refused", "budget_exceeded", "error"]
    backend: str
    intent: str = ""  # question | action | refused (agents/intent.py)
    allowed_tools: list[str] = Field(default_factory=list)  # the run's scope: tools the goal's intent allows
    stop_kind: str | None = None  # budget_exceeded: the budget's profile key; error: the error's kind
    reason: str = ""  # why the run stopped early, and what to do (refused / budget_exceeded / error)
    usage: RunUsage = Field(default_factory=RunUsage)  # turns, tool calls, tokens, wall time of this run


class RunRecord(BaseModel):
    """What a paused run keeps on disk so it can be resumed by another process."""

    run_id: str
    goal: str
    env: str
    routed_to: str
    paused_agent: str | None = None
    pending_approvals: list[str] = Field(default_factory=list)
    calls: list[Outcome] = Field(default_factory=list)
    trace_ids: list[str] = Field(default_factory=list)
    team_state: dict = Field(default_factory=dict)


def _runs_dir() -> Path:
    from autooptimizer.settings import get_settings

    return get_settings().path("runs", ".keep").parent


def save_run(record: RunRecord) -> Path:
    path = _runs_dir() / f"{record.run_id}.json"
    path.write_text(record.model_dump_json())
    return path


def find_run(approval_id: str) -> RunRecord:
    for path in sorted(_runs_dir().glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True):
        record = RunRecord.model_validate_json(path.read_text())
        if approval_id in record.pending_approvals:
            return record
    raise NotFoundError(f"No paused chat is waiting on approval {approval_id!r}.",
                        "List requests with `autoopt approvals list`; only a paused chat can be resumed.")


@contextlib.contextmanager
def _trace_scope(name: str, metadata: dict, inputs: Any) -> Iterator[str]:
    """A new trace, or a child span when the caller already opened one (interactive run + resume = one trace)."""
    from autooptimizer.tracing import active_trace_id, span, start_trace

    if active_trace_id() is not None:
        with span(name, kind="chain", inputs=inputs) as sp:
            yield sp.trace_id
    else:
        with start_trace(name, metadata, inputs=inputs) as tr:
            yield tr.trace_id


def describe(message: Any) -> str | None:
    """One line per conversation event, for streaming to a terminal."""
    from autogen_agentchat.messages import HandoffMessage, TextMessage, ToolCallExecutionEvent, ToolCallRequestEvent

    src = getattr(message, "source", "?")
    if isinstance(message, TextMessage):
        return f"[{src}] {message.content}"
    if isinstance(message, HandoffMessage):
        report = parse_report(message.content)
        note = f"{report.status}: {report.summary}" if report else "delegated"
        return f"[{src} -> {message.target}] {note[:400]}"
    if isinstance(message, ToolCallRequestEvent):
        return "\n".join(f"[{src}] calls {c.name}({c.arguments})" for c in message.content
                         if not c.name.startswith("transfer_to_"))
    if isinstance(message, ToolCallExecutionEvent):
        lines = []
        for r in message.content:
            if r.name.startswith("transfer_to_"):
                continue
            try:
                o = json.loads(r.content)
                lines.append(f"[{src}] {r.name}: {o.get('decision')} executed={o.get('executed')}"
                             + (f" ({(o.get('error') or '')[:160]})" if o.get("error") else ""))
            except ValueError:
                lines.append(f"[{src}] {r.name}: {r.content[:200]}")
        return "\n".join(lines) or None
    return None


async def _run(goal: str, env: str, *, record: RunRecord | None, resume: Resume | None,
               model_client: Any, registry: ToolRegistry | None,
               on_message: Callable[[str], None] | None, sample_source: Any = None) -> ChatResult:
    os.environ.setdefault("AUTOGEN_DISABLE_RUNTIME_TRACING", "true")
    from autogen_agentchat.base import TaskResult
    from autogen_agentchat.messages import HandoffMessage, TextMessage

    from autooptimizer.agents.autogen_client import PlannerChatCompletionClient
    from autooptimizer.agents.budgeted_client import BudgetedChatCompletionClient, quiet_stops
    from autooptimizer.agents.budgets import audit_stop, run_budget
    from autooptimizer.agents.guarded_client import guarded
    from autooptimizer.agents.intent import audit_intent, classify
    from autooptimizer.agents.llm import autogen_model_client, backend
    from autooptimizer.agents.team import SUPERVISOR, USER, build_team
    from autooptimizer.policies.approvals import ApprovalStore
    from autooptimizer.tools.adapters.common import RunContext, run_scope

    kind = "custom" if model_client is not None else backend()
    run_id = record.run_id if record else uuid.uuid4().hex[:12]
    intent = classify(goal)  # the operator's words only, with the trusted offline router
    if intent.kind == "refused":
        return _refuse(goal, env, intent, run_id, kind)
    from autooptimizer.settings import get_settings

    budget = run_budget(env)
    quiet_stops()
    inner = model_client or autogen_model_client(limits=budget.limits)
    # too-deep tool args reach the registry; every model turn is charged to the run's budget
    model_client = BudgetedChatCompletionClient(guarded(inner), budget,
                                                remote=not isinstance(inner, PlannerChatCompletionClient),
                                                base_url=get_settings().llm_base_url)
    granted = {resume.approval_id} if resume and resume.status == "approved" else set()
    ctx = RunContext(env=env, goal=goal, granted=granted, scope=intent.scope, sample_source=sample_source,
                     budget=budget)
    meta = {"goal": goal[:500], "env": env, "run_id": run_id, "backend": kind, "intent": intent.kind,
            **({"resumes": resume.approval_id, "previous_traces": ",".join(record.trace_ids)} if resume and record
               else {})}
    messages: list[Any] = []
    with _trace_scope("chat.resume" if resume else "chat", meta, {"goal": goal}) as trace_id, run_scope(ctx):
        if intent.ignored and not resume:
            audit_intent(intent, goal, env, kind="quarantine", run_id=run_id, trace_id=trace_id)
        team = build_team(model_client, registry, scope=intent.scope)
        if record and resume:
            await team.load_state(record.team_state)
            task: Any = HandoffMessage(source="approvals", target=record.paused_agent or SUPERVISOR,
                                       content=render_resume(resume))
        else:
            task = TextMessage(source="user", content=wrap_goal(goal))
        try:
            async for item in team.run_stream(task=task):
                if isinstance(item, TaskResult):
                    continue
                messages.append(item)
                if on_message and (line := describe(item)):
                    on_message(line)
        except Exception as exc:  # noqa: BLE001 - a failed run is an answer (status error), never a traceback
            from autooptimizer.agents.budgeted_client import explain_error

            if budget.stop is None:
                budget.fail(explain_error(exc, get_settings().llm_base_url))
        stop = budget.stop
        if stop is not None:
            audit_stop(stop, env=env, goal=goal, run_id=run_id, trace_id=trace_id, usage=budget.snapshot())
            if on_message:
                on_message(f"[runtime] run stopped ({stop.status}: {stop.kind}): {stop.reason}")
        with contextlib.suppress(Exception):  # the HTTP client closes inside this event loop, not at GC after it
            await model_client.close()
        try:
            state = await team.save_state()
        except Exception:  # noqa: BLE001 - a run stopped mid-turn may not serialize; the record keeps the calls
            if stop is None:
                raise
            state = {}

    calls = (record.calls if record else []) + ctx.calls
    routed = record.routed_to if record else next(
        (m.target for m in messages if isinstance(m, HandoffMessage) and m.source == SUPERVISOR), "clarify")
    last = messages[-1] if messages else None
    store = ApprovalStore()
    pending = []
    for c in calls:
        if c.decision == "needs_approval" and c.approval_id and c.approval_id not in pending:
            with contextlib.suppress(NotFoundError):
                if store.get(c.approval_id).status in ("pending", "approved"):
                    pending.append(c.approval_id)
    handoff = last if isinstance(last, HandoffMessage) and last.target == USER else None
    if handoff is not None and not pending and not resume:  # a model handing back with nothing to approve
        handoff = None
    paused = handoff is not None and stop is None
    if stop is not None:
        answer = f"Run stopped ({stop.status}: {stop.kind}). {stop.reason}"
        handoff = None
    elif handoff is not None:
        report = parse_report(handoff.content)
        answer = (f"Paused: {report.summary if report else handoff.content} Answer with `autoopt approvals approve "
                  f"ID` (or deny), then `autoopt chat --resume ID`.")
    else:
        texts = [m for m in messages if isinstance(m, TextMessage) and m.source != "user"]
        answer = texts[-1].content if texts else (describe(last) or "")
        pending = [p for p in pending if p not in {resume.approval_id if resume else ""}]
    new_record = RunRecord(run_id=run_id, goal=goal, env=env, routed_to=routed,
                           paused_agent=handoff.source if handoff is not None else None,
                           pending_approvals=pending if paused else [], calls=calls,
                           trace_ids=(record.trace_ids if record else []) + [trace_id],
                           team_state=json.loads(json.dumps(state, default=str)))
    save_run(new_record)
    return ChatResult(routed_to=routed, answer=answer,
                      tool_calls=[ToolCallRecord(agent=c.agent, tool=c.tool, args=c.args, decision=c.decision,
                                                 executed=c.executed, approval_id=c.approval_id, error=c.error,
                                                 policies=c.policies)
                                  for c in calls],
                      pending_approvals=pending, trace_id=trace_id, run_id=run_id,
                      status=stop.status if stop else "paused" if paused else "completed", backend=kind,
                      intent=intent.kind, allowed_tools=intent.allowed_tools, stop_kind=stop.kind if stop else None,
                      reason=stop.reason if stop else "", usage=budget.snapshot())


def _refuse(goal: str, env: str, intent: Any, run_id: str, kind: str) -> ChatResult:
    """End a run whose goal tries to override instructions or policy: one audit record, no model, no tool."""
    from autooptimizer.agents.intent import audit_intent

    meta = {"goal": goal[:500], "env": env, "run_id": run_id, "backend": kind, "intent": "refused"}
    with _trace_scope("chat", meta, {"goal": goal}) as trace_id:
        audit_intent(intent, goal, env, kind="refusal", run_id=run_id, trace_id=trace_id)
    return ChatResult(routed_to="none", answer=intent.reason, tool_calls=[], pending_approvals=[],
                      trace_id=trace_id, run_id=run_id, status="refused", backend=kind, intent="refused",
                      reason=intent.reason)


def run_chat(goal: str, env: str | None = None, *, model_client: Any = None, registry: ToolRegistry | None = None,
             on_message: Callable[[str], None] | None = None, sample_source: Any = None) -> ChatResult:
    """Run one goal to its end or to its first approval pause. `sample_source`: where the run's A/B tests read live
    numbers (default: the live feedback log and Prometheus)."""
    from autooptimizer.settings import ENVIRONMENTS, get_settings

    if not goal or not goal.strip():
        raise InputError("The goal is empty.", 'Say what you want, e.g. autoopt chat "NDCG dropped, fix the reranker".')
    env = env or get_settings().env
    if env not in ENVIRONMENTS:
        raise InputError(f"Unknown environment {env!r}.", f"Use one of {', '.join(ENVIRONMENTS)}.")
    return asyncio.run(_run(goal, env, record=None, resume=None, model_client=model_client, registry=registry,
                            on_message=on_message, sample_source=sample_source))


def resume_chat(approval_id: str, *, model_client: Any = None, registry: ToolRegistry | None = None,
                on_message: Callable[[str], None] | None = None, sample_source: Any = None) -> ChatResult:
    """Continue the paused chat waiting on `approval_id`, once a person has approved or denied it."""
    from autooptimizer.policies.approvals import ApprovalStore

    record = find_run(approval_id)
    req = ApprovalStore().get(approval_id)
    if req.status == "pending":
        raise InputError(f"Approval {approval_id} is still pending.",
                         f"Answer it first: `autoopt approvals approve {approval_id}` or `... deny {approval_id}`.")
    resume = Resume(approval_id=approval_id, status=req.status, tool=req.tool)
    return asyncio.run(_run(record.goal, record.env, record=record, resume=resume, model_client=model_client,
                            registry=registry, on_message=on_message, sample_source=sample_source))
