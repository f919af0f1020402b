"""AutoGen tools from the one registry: a `StaticWorkbench` whose `call_tool` is `REGISTRY.call`.

Arguments go to the registry unvalidated, so even a malformed call is decided, audited and explained there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from autogen_core import CancellationToken
from autogen_core.tools import StaticWorkbench, TextResultContent, ToolResult, ToolSchema

from autooptimizer.tools.adapters.common import call_tool, outcome_text
from autooptimizer.tools.registry import REGISTRY, ToolRegistry


class RegistryWorkbench(StaticWorkbench):
    """One agent's tools; listing and calling both go to the registry."""

    def __init__(self, agent: str, registry: ToolRegistry | None = None, *,
                 scope: frozenset[str] | None = None) -> None:
        super().__init__(tools=[])
        self.agent = agent
        self.registry = registry or REGISTRY
        self.scope = scope  # the tools the run's intent allows; every call carries it (None = unscoped)

    async def list_tools(self) -> list[ToolSchema]:
        out: list[ToolSchema] = []
        for spec in self.registry.for_agent(self.agent):
            params = spec.json_schema()
            parameters: Any = {"type": "object", "properties": params.get("properties", {}),
                               "required": params.get("required", []),
                               **({"$defs": params["$defs"]} if "$defs" in params else {})}
            out.append(ToolSchema(name=spec.name, description=spec.description, parameters=parameters))
        return out

    async def call_tool(self, name: str, arguments: Mapping[str, Any] | None = None,
                        cancellation_token: CancellationToken | None = None, call_id: str | None = None) -> ToolResult:
        # to_thread copies the context, so the tool span nests under AutoGen's execute_tool span.
        from autooptimizer.agents.budgets import BudgetExceeded, LLMError

        args: Any = dict(arguments) if isinstance(arguments, Mapping) else ({} if arguments is None else arguments)
        try:
            outcome = await asyncio.to_thread(call_tool, self.agent, name, args, self.registry, scope=self.scope)
        except (BudgetExceeded, LLMError) as exc:  # the run is stopped: the model's next turn ends it
            return ToolResult(name=name, result=[TextResultContent(content=f"Run stopped: {exc}")], is_error=True)
        return ToolResult(name=name, result=[TextResultContent(content=outcome_text(outcome))],
                          is_error=not outcome.executed or outcome.error is not None)
