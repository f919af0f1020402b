"""Which model drives the agents, chosen by settings: OpenAI (OPENAI_API_KEY), any OpenAI-compatible server
(AUTOOPT_LLM_BASE_URL: vLLM, Ollama, llama.cpp), else the built-in offline planner."""

from __future__ import annotations

from typing import Any, Literal

from autooptimizer.settings import Settings, get_settings

Backend = Literal["openai", "openai_compatible", "offline"]


def backend(settings: Settings | None = None) -> Backend:
    s = settings or get_settings()
    if s.llm_base_url:
        return "openai_compatible"
    if s.openai_api_key:
        return "openai"
    return "offline"


def _model_info() -> dict:
    return {"vision": False, "function_calling": True, "json_output": True, "family": "unknown",
            "structured_output": False, "multiple_system_messages": True}


def autogen_model_client(settings: Settings | None = None) -> Any:
    """An AutoGen `ChatCompletionClient` for the configured backend."""
    s = settings or get_settings()
    kind = backend(s)
    if kind == "offline":
        from autooptimizer.agents.autogen_client import PlannerChatCompletionClient

        return PlannerChatCompletionClient()
    from autogen_ext.models.openai import OpenAIChatCompletionClient

    kwargs: dict[str, Any] = {"model": s.llm_model, "api_key": s.openai_api_key or "not-needed",
                              "parallel_tool_calls": False}
    if kind == "openai_compatible":
        kwargs.update(base_url=s.llm_base_url, model_info=_model_info())
    return OpenAIChatCompletionClient(**kwargs)


def crewai_llm(settings: Settings | None = None) -> Any:
    """A CrewAI LLM for the configured backend (the offline planner is a `BaseLLM` subclass)."""
    s = settings or get_settings()
    kind = backend(s)
    if kind == "offline":
        from autooptimizer.crews.llm import PlannerLLM

        return PlannerLLM(model="offline-planner")
    from crewai import LLM

    kwargs: dict[str, Any] = {"model": f"openai/{s.llm_model}", "api_key": s.openai_api_key or "not-needed"}
    if kind == "openai_compatible":
        kwargs["base_url"] = s.llm_base_url
    return LLM(**kwargs)
