"""Test double: a model that obeys every instruction it reads, plugged in where the offline planner plugs in.

It is the offline planner (so it also does the operator's actual job) with one flaw added on top: whenever the text
it sees — the goal with its quotes, delegations, reports, tool results — names a tool, it acts on it:

- as a specialist, it calls every named tool it owns, once;
- as the supervisor, it delegates every named tool to the tool's owner, once ("call delete_model now");
- as a specialist that reports back, it pastes what its tools returned into the report, as a careless model would,
  so poisoned tool output reaches the supervisor too.

Nothing in the product knows about it: it proves that the POLICY, not the planner's good manners, keeps a run
inside what the operator's goal asked for.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

from autogen_core import CancellationToken, FunctionCall
from autogen_core.models import (
    AssistantMessage,
    CreateResult,
    FunctionExecutionResultMessage,
    LLMMessage,
    RequestUsage,
    SystemMessage,
    UserMessage,
)

from autooptimizer.agents.autogen_client import PlannerChatCompletionClient, read_turn
from autooptimizer.agents.protocol import Delegation, render_delegation
from autooptimizer.agents.specs import SUPERVISOR
from autooptimizer.policies.catalog import load_catalog

# what the double understands as "call this tool": its name in any spelling, or a plain request for it
PHRASES = {
    "delete_model": r"\b(?:delete|remove|drop)\b[^.\n]{0,30}?\b(?:model|version)",
    "set_model_alias": r"\bset\b[^.\n]{0,20}?\b(?:champion|challenger|gold|alias)\b",
    "promote_model": r"\bpromote\b",
    "rollback_deployment": r"\broll\s*back\b|\brollback\b",
    "deploy_canary": r"\bdeploy\b[^.\n]{0,30}?\bcanary\b",
    "train_reranker": r"\bre-?train\b",
    "register_model": r"\bregister\b",
    "scale_service": r"\bscale\b[^.\n]{0,30}?\breplicas?\b|\breplicas\s+\d+",
    "switch_variant": r"\bswitch\b[^.\n]{0,30}?\bvariant\b",
}
DATASET = "0123456789abcdef"


def seen_text(messages: Sequence[LLMMessage]) -> str:
    """Everything but the system prompt, as an LLM reads it: through full-width letters and zero-width characters."""
    parts: list[str] = []
    for msg in messages:
        if isinstance(msg, SystemMessage):
            continue
        if isinstance(msg, FunctionExecutionResultMessage):
            parts += [r.content for r in msg.content]
        elif isinstance(msg, UserMessage | AssistantMessage):
            content = msg.content
            if isinstance(content, list):
                parts += [c.arguments if isinstance(c, FunctionCall) else str(c) for c in content]
            else:
                parts.append(str(content))
    text = unicodedata.normalize("NFKC", "\n".join(parts))
    return "".join(ch for ch in text if unicodedata.category(ch) != "Cf")


def named_tools(text: str) -> list[str]:
    """Catalogue tools the text names, in the order they first appear."""
    hits: dict[str, int] = {}
    for name in load_catalog().tools:
        spelled = r"\b" + r"[\s_-]?".join(name.split("_")) + r"\b"
        found = [m.start() for rx in (spelled, PHRASES.get(name)) if rx for m in re.finditer(rx, text, re.I)]
        if found:
            hits[name] = min(found)
    return sorted(hits, key=hits.__getitem__)


def args_for(tool: str, text: str) -> dict:
    """Arguments the text suggests (a version number if it names one), else plausible ones."""
    m = re.search(r"\bversion\W{0,3}(\w[\w.-]*)", text, re.I)
    v = m.group(1) if m else "1"
    return {"delete_model": {"version": v}, "set_model_alias": {"alias": "champion", "version": v},
            "promote_model": {"model_version": v}, "rollback_deployment": {"reason": "the text said so"},
            "deploy_canary": {"model_version": v, "weight": 0.5}, "start_ab_test": {"model_version": v},
            "train_reranker": {"dataset": DATASET}, "register_model": {"version": v},
            "scale_service": {"replicas": 16}, "switch_variant": {"rerank_depth": 5}, "build_dataset": {},
            "augment_dataset": {"dataset": DATASET, "out_csv": "/tmp/obedient.csv"},
            "query_metrics": {"promql": "up"}, "check_quality_gates": {}, "explain_reranker": {"dataset": DATASET},
            "evaluate_model": {"model": "champion", "data": "scifact"}}[tool]


class ObedientModel(PlannerChatCompletionClient):
    """The offline planner that also does whatever the text it reads tells it to (see the module doc).
    `attempts` lists (agent, tool) for every call or delegation it made because text named the tool."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts: list[tuple[str, str]] = []

    async def create(self, messages: Sequence[LLMMessage], *, tools: Sequence[Any] = [], tool_choice: Any = "auto",
                     json_output: Any = None, extra_create_args: Mapping[str, Any] = {},
                     cancellation_token: CancellationToken | None = None) -> CreateResult:
        turn = read_turn(messages, tools)
        text = seen_text(messages)
        usage = RequestUsage(prompt_tokens=0, completion_tokens=0)
        for tool in named_tools(text):
            owner = load_catalog().tools[tool].owner
            if turn.agent == SUPERVISOR and f"transfer_to_{owner}" in turn.tools \
                    and (SUPERVISOR, tool) not in self.attempts:
                self.attempts.append((SUPERVISOR, tool))
                message = render_delegation(Delegation(agent=owner, goal=f"call {tool} now"))
                call = FunctionCall(id=f"obey-{len(self.attempts)}", name=f"transfer_to_{owner}",
                                    arguments=json.dumps({"message": message}))
                return CreateResult(finish_reason="function_calls", content=[call], usage=usage, cached=False)
            if turn.agent != SUPERVISOR and tool in turn.tools and (turn.agent, tool) not in self.attempts:
                self.attempts.append((turn.agent, tool))
                call = FunctionCall(id=f"obey-{len(self.attempts)}", name=tool,
                                    arguments=json.dumps(args_for(tool, text)))
                return CreateResult(finish_reason="function_calls", content=[call], usage=usage, cached=False)
        result = await super().create(messages, tools=tools, tool_choice=tool_choice, json_output=json_output,
                                      extra_create_args=extra_create_args, cancellation_token=cancellation_token)
        return self._gossip(result, messages) if turn.agent != SUPERVISOR else result

    @staticmethod
    def _gossip(result: CreateResult, messages: Sequence[LLMMessage]) -> CreateResult:
        """Paste the tool results into a handoff report, so whoever reads the report reads them too."""
        outputs = [r.content for m in messages if isinstance(m, FunctionExecutionResultMessage) for r in m.content]
        if not outputs or not isinstance(result.content, list):
            return result
        calls = []
        for c in result.content:
            if c.name.startswith("transfer_to_"):
                args = json.loads(c.arguments)
                args["message"] = args.get("message", "") + "\n\nWhat my tools returned:\n" + "\n".join(outputs)
                c = FunctionCall(id=c.id, name=c.name, arguments=json.dumps(args))
            calls.append(c)
        return CreateResult(finish_reason=result.finish_reason, content=calls, usage=result.usage, cached=False)
