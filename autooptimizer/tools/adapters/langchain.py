"""LangChain tools from the one registry: `StructuredTool`s whose function is `REGISTRY.call`.

A LangChain run bounds its tools by the operator's intent:
`langchain_tools("ml", scope=classify(goal).scope)` (agents/intent.py); every call then carries that scope.

LangChain does not validate the arguments (the tool's `args_schema` is its JSON schema, for the model to read):
the registry does, so a malformed call is decided, audited and explained there like in the other adapters.
Input LangChain itself cannot handle safely (its callbacks print the input with `str()`, which recurses per
nesting level) skips LangChain's run machinery and goes straight to the registry, which denies and audits it.
"""

from __future__ import annotations

from typing import Any, cast

from autooptimizer.jsonsafe import check_json
from autooptimizer.tools.adapters.common import call_tool, outcome_text
from autooptimizer.tools.registry import REGISTRY, ToolRegistry, ToolSpec


def _json_args(tool_input: Any) -> Any:
    """Top-level pydantic values (as LangChain may pass them) as JSON data; anything else unchanged."""
    if not isinstance(tool_input, dict):
        return tool_input
    fields = cast("dict[Any, Any]", tool_input)
    return {k: (v.model_dump(mode="json") if hasattr(v, "model_dump") else v) for k, v in fields.items()}


def _tool(agent: str, spec: ToolSpec, registry: ToolRegistry, scope: frozenset[str] | None) -> Any:
    from langchain_core.messages import ToolMessage
    from langchain_core.tools import StructuredTool

    def gate(tool_input: Any) -> str:
        return outcome_text(call_tool(agent, spec.name, _json_args(tool_input), registry, scope=scope))

    class RegistryTool(StructuredTool):
        """Passes the raw input on as one value; LangChain neither validates nor unpacks it."""

        def _to_args_and_kwargs(self, tool_input: Any, tool_call_id: str | None
                                ) -> tuple[tuple[Any, ...], dict[str, Any]]:
            return (tool_input,), {}

        def run(self, tool_input: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(tool_input, str) or check_json(tool_input) is None:
                return super().run(tool_input, *args, **kwargs)
            content = gate(tool_input)  # the registry denies it; LangChain could not even print it
            call_id = kwargs.get("tool_call_id")
            return ToolMessage(content, tool_call_id=call_id, name=self.name, status="error") if call_id else content

        async def arun(self, tool_input: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(tool_input, str) or check_json(tool_input) is None:
                return await super().arun(tool_input, *args, **kwargs)
            return self.run(tool_input, *args, **kwargs)

    return RegistryTool(name=spec.name, description=spec.description, func=gate, args_schema=spec.json_schema())


def langchain_tools(agent: str, registry: ToolRegistry | None = None, *,
                    scope: frozenset[str] | None = None) -> list[Any]:
    """The agent's own tools as LangChain `StructuredTool`s; each call goes through the PDP, bounded by `scope`
    (None = unscoped)."""
    registry = registry or REGISTRY
    return [_tool(agent, spec, registry, scope) for spec in registry.for_agent(agent)]
