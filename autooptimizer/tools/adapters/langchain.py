"""LangChain tools from the one registry: `StructuredTool`s whose function is `REGISTRY.call`.

A LangChain run bounds its tools by the operator's intent:
`langchain_tools("ml", scope=classify(goal).scope)` (agents/intent.py); every call then carries that scope.
"""

from __future__ import annotations

from typing import Any

from autooptimizer.tools.adapters.common import call_tool, outcome_text
from autooptimizer.tools.registry import REGISTRY, ToolRegistry, ToolSpec


def _tool(agent: str, spec: ToolSpec, registry: ToolRegistry, scope: frozenset[str] | None) -> Any:
    from langchain_core.tools import StructuredTool

    def run(**kwargs: Any) -> str:
        args = {k: (v.model_dump(mode="json") if hasattr(v, "model_dump") else v) for k, v in kwargs.items()}
        return outcome_text(call_tool(agent, spec.name, args, registry, scope=scope))

    return StructuredTool.from_function(func=run, name=spec.name, description=spec.description,
                                        args_schema=spec.args_model, infer_schema=False)


def langchain_tools(agent: str, registry: ToolRegistry | None = None, *,
                    scope: frozenset[str] | None = None) -> list[Any]:
    """The agent's own tools as LangChain `StructuredTool`s; each call goes through the PDP, bounded by `scope`
    (None = unscoped)."""
    registry = registry or REGISTRY
    return [_tool(agent, spec, registry, scope) for spec in registry.for_agent(agent)]
