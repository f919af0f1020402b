"""Thin LangChain / AutoGen / CrewAI wrappers over the single tool registry. Import the submodule you need;
each imports its framework lazily, so this package stays light."""

from autooptimizer.tools.adapters.common import RunContext, call_tool, current_run, outcome_text, run_scope

__all__ = ["RunContext", "call_tool", "current_run", "outcome_text", "run_scope"]
