"""The offline planner as an AutoGen `ChatCompletionClient`: AutoGen's real agents, Swarm, handoffs and
workbenches run around it; only the "model" is deterministic and local.

Message reading is the planner's whole view of the world, as it would be for a real LLM: the system message
names the agent, the first user message carries the wrapped goal, tool results are `Outcome` JSON and agents
talk with DELEGATE / REPORT / RESUME blocks (see protocol.py).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from autogen_core import CancellationToken, FunctionCall
from autogen_core.models import (
    CreateResult,
    FunctionExecutionResultMessage,
    LLMMessage,
    ModelInfo,
    RequestUsage,
    SystemMessage,
    UserMessage,
)
from autogen_core.tools import Tool, ToolSchema
from pydantic import BaseModel

from autooptimizer.agents.client_base import SingleReplyStream
from autooptimizer.agents.planner import Action, OfflinePlanner, Turn
from autooptimizer.agents.protocol import (
    parse_delegation,
    parse_outcome,
    parse_report,
    parse_resume,
    render_delegation,
    render_report,
    unwrap_goal,
)
from autooptimizer.agents.specs import SPECIALISTS, SUPERVISOR

_AGENT = re.compile(r"^\[agent: (\w+)\]")
MODEL_INFO: ModelInfo = {"vision": False, "function_calling": True, "json_output": False, "family": "unknown",
                         "structured_output": False, "multiple_system_messages": True}


def _schema(tool: Tool | ToolSchema) -> ToolSchema:
    return tool.schema if isinstance(tool, Tool) else tool


def _text(content: Any) -> str:
    return content if isinstance(content, str) else json.dumps(content, default=str)


def read_turn(messages: Sequence[LLMMessage], tools: Sequence[Tool | ToolSchema]) -> Turn:
    """Translate AutoGen's model input into the planner's `Turn`."""
    agent = ""
    for msg in messages:
        if isinstance(msg, SystemMessage) and (m := _AGENT.match(msg.content)):
            agent = m.group(1)
            break
    schemas = {s["name"]: dict(s.get("parameters") or {}) for s in map(_schema, tools)}
    turn = Turn(agent=agent or SUPERVISOR, tools=schemas)
    for msg in messages:
        if isinstance(msg, UserMessage) and msg.source == "user" and not turn.goal:
            turn.goal = unwrap_goal(_text(msg.content)) or ""
    if turn.agent == SUPERVISOR:
        for msg in messages:
            if isinstance(msg, UserMessage) and msg.source in SPECIALISTS and (r := parse_report(_text(msg.content))):
                turn.reports.append(r)
        return turn
    start = 0
    for i, msg in enumerate(messages):
        if isinstance(msg, UserMessage) and msg.source == SUPERVISOR and (d := parse_delegation(_text(msg.content))):
            turn.delegation, start = d, i
    for msg in messages[start:]:
        if isinstance(msg, FunctionExecutionResultMessage):
            for res in msg.content:
                if (o := parse_outcome(res.content)) is not None:
                    turn.outcomes.append(o)
        elif isinstance(msg, UserMessage) and msg.source != "user" and (r := parse_resume(_text(msg.content))):
            turn.resume = r
    return turn


def to_create_result(action: Action, turn: Turn) -> CreateResult:
    usage = RequestUsage(prompt_tokens=0, completion_tokens=0)
    call_id = f"call_{uuid.uuid4().hex[:12]}"
    if action.kind == "tool":
        call = FunctionCall(id=call_id, name=action.tool or "", arguments=json.dumps(action.args))
    elif action.kind == "delegate" and action.delegation is not None:
        call = FunctionCall(id=call_id, name=f"transfer_to_{action.delegation.agent}",
                            arguments=json.dumps({"message": render_delegation(action.delegation)}))
    elif action.kind == "report" and action.report is not None:
        target = "user" if action.report.status == "pending_approval" else SUPERVISOR
        if f"transfer_to_{target}" not in turn.tools:
            return CreateResult(finish_reason="stop", content=render_report(action.report), usage=usage, cached=False)
        call = FunctionCall(id=call_id, name=f"transfer_to_{target}",
                            arguments=json.dumps({"message": render_report(action.report)}))
    else:
        return CreateResult(finish_reason="stop", content=action.text, usage=usage, cached=False)
    return CreateResult(finish_reason="function_calls", content=[call], usage=usage, cached=False)


class PlannerChatCompletionClient(SingleReplyStream):
    """A `ChatCompletionClient` whose answers come from the offline planner (no network, deterministic; a stream is
    the one reply)."""

    def __init__(self, planner: OfflinePlanner | None = None) -> None:
        self.planner = planner or OfflinePlanner()
        self._usage = RequestUsage(prompt_tokens=0, completion_tokens=0)

    async def create(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = [],
                     tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
                     json_output: bool | type[BaseModel] | None = None, extra_create_args: Mapping[str, Any] = {},
                     cancellation_token: CancellationToken | None = None) -> CreateResult:
        from autooptimizer.tracing import span

        turn = read_turn(messages, tools)
        seen = {"agent": turn.agent, "tools": sorted(turn.tools), "outcomes": len(turn.outcomes)}
        with span(f"llm:{turn.agent}", kind="llm", inputs=seen, model="offline-planner") as sp:
            action = self.planner.decide(turn)
            sp.set_outputs(action.model_dump(exclude_none=True))
            target = action.tool or (action.delegation.agent if action.delegation else "")
            sp.summary(f"{action.kind} {target or (action.report.status if action.report else '')}".strip())
        return to_create_result(action, turn)

    async def close(self) -> None:
        return None

    def actual_usage(self) -> RequestUsage:
        return self._usage

    def total_usage(self) -> RequestUsage:
        return self._usage

    def count_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        return sum(len(_text(getattr(m, "content", ""))) // 4 for m in messages)

    def remaining_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        return max(0, 1_000_000 - self.count_tokens(messages, tools=tools))

    @property
    def capabilities(self) -> Any:  # deprecated in AutoGen, still abstract
        return MODEL_INFO

    @property
    def model_info(self) -> ModelInfo:
        return MODEL_INFO


__all__ = ["PlannerChatCompletionClient", "read_turn"]
