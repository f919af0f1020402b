"""LangChain tools from the one registry: `StructuredTool`s whose function is `REGISTRY.call`."""

from __future__ import annotations

from typing import Any

from autooptimizer.tools.adapters.common import call_tool, outcome_text
from autooptimizer.tools.registry import REGISTRY, ToolRegistry, ToolSpec


def _tool(agent: str, spec: ToolSpec, registry: ToolRegistry) -> Any:
    from langchain_core.tools import StructuredTool

    def run(**kwargs: Any) -> str:
        args = {k: (v.model_dump(mode="json") if hasattr(v, "model_dump") else v) for k, v in kwargs.items()}
        return outcome_text(call_tool(agent, spec.name, args, registry))

    return StructuredTool.from_function(func=run, name=spec.name, description=spec.description,
                                        args_schema=spec.args_model, infer_schema=False)


def langchain_tools(agent: str, registry: ToolRegistry | None = None) -> list[Any]:
    """The agent's own tools as LangChain `StructuredTool`s; each call goes through the PDP."""
    registry = registry or REGISTRY
    return [_tool(agent, spec, registry) for spec in registry.for_agent(agent)]
