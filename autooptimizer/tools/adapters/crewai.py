"""CrewAI tools from the one registry: `BaseTool`s whose `_run` is `REGISTRY.call`.

CrewAI's tool-result cache is switched off: a cached answer would replay a decision instead of asking the PDP.
CrewAI's own argument validation is too: the registry validates, so a malformed call is decided and audited there.
"""

from __future__ import annotations

from typing import Any

from autooptimizer.tools.adapters.common import call_tool, outcome_text
from autooptimizer.tools.registry import REGISTRY, ToolRegistry, ToolSpec


def _tool(agent: str, spec: ToolSpec, registry: ToolRegistry, scope: frozenset[str] | None) -> Any:
    from crewai.tools import BaseTool

    class RegistryTool(BaseTool):
        name: str = spec.name
        description: str = spec.description
        args_schema: type = spec.args_model

        def _validate_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
            return kwargs  # the registry validates (and audits) every call, malformed ones included

        def _run(self, **kwargs: Any) -> str:
            return outcome_text(call_tool(agent, spec.name, kwargs, registry, scope=scope))

    RegistryTool.__name__ = f"RegistryTool_{spec.name}"
    tool = RegistryTool()
    tool.cache_function = _never_cache
    return tool


def crewai_tools(agent: str, registry: ToolRegistry | None = None, *,
                 scope: frozenset[str] | None = None) -> list[Any]:
    """The agent's own tools as CrewAI `BaseTool`s; each call goes through the PDP, bounded by `scope` (the tools
    the operator's intent allows, agents/intent.py; None = unscoped) and by the kickoff's own scope."""
    registry = registry or REGISTRY
    return [_tool(agent, spec, registry, scope) for spec in registry.for_agent(agent)]


def _never_cache(_args: Any = None, _result: Any = None) -> bool:
    """Every call reaches the registry (and the PDP): CrewAI's result cache would let a repeat skip the gate."""
    return False
