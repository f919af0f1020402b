"""Agent tools. Every tool is defined once in an area module and reached only through the registry's gate.

See `autooptimizer.tools.registry` for the API (`tool`, `ToolRegistry.call`, `load_all_tools`).
"""

from autooptimizer.tools.registry import (
    AGENTS,
    REGISTRY,
    Risk,
    ToolCallResult,
    ToolEvent,
    ToolRegistry,
    ToolSpec,
    load_all_tools,
    tool,
)

__all__ = ["AGENTS", "REGISTRY", "Risk", "ToolCallResult", "ToolEvent", "ToolRegistry", "ToolSpec", "load_all_tools",
           "tool"]
