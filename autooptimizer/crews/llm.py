"""The offline planner as a CrewAI `BaseLLM`: CrewAI's real hierarchical process, delegation tools and native
tool calling run around it. Reads CrewAI's OpenAI-style messages into the planner's `Turn`; answers with
tool calls (a list of OpenAI-style dicts) or a final text."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from crewai.llms.base_llm import BaseLLM
from pydantic import PrivateAttr

from autooptimizer.agents.planner import OfflinePlanner, Turn
from autooptimizer.agents.protocol import parse_delegation, parse_outcome, parse_report, render_report, unwrap_goal
from autooptimizer.agents.specs import SUPERVISOR

_AGENT = re.compile(r"\[agent: (\w+)\]")
DELEGATE_TOOL = "delegate_work_to_coworker"


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "\n".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in content)
    return "" if content is None else str(content)


class PlannerLLM(BaseLLM):
    """Deterministic, local, no network. `roles` maps a CrewAI role to our agent name."""

    llm_type: str = "offline-planner"
    roles: dict[str, str] = {}
    _planner: OfflinePlanner | None = PrivateAttr(default=None)

    @property
    def planner(self) -> OfflinePlanner:
        if self._planner is None:
            self._planner = OfflinePlanner()
        return self._planner

    def supports_function_calling(self) -> bool:
        return True

    def supports_stop_words(self) -> bool:
        return False

    def get_context_window_size(self) -> int:
        return 1_000_000

    def _turn(self, messages: list[dict], tools: list[dict] | None, from_agent: Any) -> Turn:
        agent = self.roles.get(getattr(from_agent, "role", "") or "", "")
        if not agent:
            for msg in messages:
                if msg.get("role") == "system" and (m := _AGENT.search(_text(msg.get("content")))):
                    agent = m.group(1)
                    break
        schemas = {}
        for t in tools or []:
            fn = t.get("function", t) if isinstance(t, dict) else {}
            if fn.get("name"):
                schemas[fn["name"]] = dict(fn.get("parameters") or {})
        turn = Turn(agent=agent or SUPERVISOR, tools=schemas, delegate_tool=DELEGATE_TOOL)
        users = [_text(m.get("content")) for m in messages if m.get("role") == "user"]
        if users:
            turn.goal = unwrap_goal(users[0]) or ""
        tool_texts = [_text(m.get("content")) for m in messages if m.get("role") == "tool"]
        if turn.agent == SUPERVISOR:
            turn.reports = [r for t in tool_texts if (r := parse_report(t))]
        else:
            if users:
                turn.delegation = parse_delegation(users[0])
                if turn.delegation and not turn.goal:
                    turn.goal = turn.delegation.goal
            turn.outcomes = [o for t in tool_texts if (o := parse_outcome(t))]
        return turn

    def call(self, messages: str | list[dict], tools: list[dict] | None = None, callbacks: list[Any] | None = None,
             available_functions: dict[str, Any] | None = None, from_task: Any = None, from_agent: Any = None,
             response_model: Any = None) -> str | list[dict]:
        from autooptimizer.tracing import span

        msgs = [{"role": "user", "content": messages}] if isinstance(messages, str) else list(messages)
        turn = self._turn(msgs, tools, from_agent)
        seen = {"agent": turn.agent, "tools": sorted(turn.tools), "outcomes": len(turn.outcomes)}
        with span(f"llm:{turn.agent}", kind="llm", inputs=seen, model=self.model) as sp:
            action = self.planner.decide(turn)
            sp.set_outputs(action.model_dump(exclude_none=True))
        call_id = f"call_{uuid.uuid4().hex[:12]}"
        if action.kind == "tool":
            return [{"id": call_id, "type": "function",
                     "function": {"name": action.tool, "arguments": json.dumps(action.args)}}]
        if action.kind == "delegate" and action.delegation is not None:
            from autooptimizer.agents.protocol import render_delegation

            role = next((r for r, a in self.roles.items() if a == action.delegation.agent), action.delegation.agent)
            args = {"task": f"Do the {action.delegation.job or 'default'} job for the operator goal in the context.",
                    "context": render_delegation(action.delegation), "coworker": role}
            return [{"id": call_id, "type": "function", "function": {"name": DELEGATE_TOOL,
                                                                     "arguments": json.dumps(args)}}]
        if action.kind == "report" and action.report is not None:
            return render_report(action.report)
        return action.text

    async def acall(self, *args: Any, **kwargs: Any) -> str | list[dict]:
        return self.call(*args, **kwargs)
