"""Which model drives the agents, chosen by settings: OpenAI (OPENAI_API_KEY), any OpenAI-compatible server
(AUTOOPT_LLM_BASE_URL: vLLM, Ollama, llama.cpp, `autoopt llm serve`), else the built-in offline planner.

The client code is the same for every server; only the URL, model and key differ. Every client gets the profile's
per-reply limits (`llm.maxTokensPerReply` as max_tokens, `llm.requestTimeoutSeconds`); retries are the run
budget's (agents/budgeted_client.py), so the SDKs' own retries are off. The AutoGen client checks each reply's
shape before the SDK reads it (agents/replies.py: not JSON, or no choices, is a clear error).
"""

from __future__ import annotations

from typing import Any, Literal

from autooptimizer.agents.budgets import LLMBudgets
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


def _limits(settings: Settings, limits: LLMBudgets | None) -> LLMBudgets:
    if limits is not None:
        return limits
    from autooptimizer.profiles import load_profile

    return load_profile(settings.env).llm


def _sampling(lim: LLMBudgets) -> dict[str, Any]:
    return {} if lim.temperature is None else {"temperature": lim.temperature}


def autogen_model_client(settings: Settings | None = None, limits: LLMBudgets | None = None) -> Any:
    """An AutoGen `ChatCompletionClient` for the configured backend, with the profile's per-reply limits."""
    s = settings or get_settings()
    kind = backend(s)
    if kind == "offline":
        from autooptimizer.agents.autogen_client import PlannerChatCompletionClient

        return PlannerChatCompletionClient()
    from autogen_ext.models.openai import OpenAIChatCompletionClient

    from autooptimizer.agents.replies import checked_http_client

    lim = _limits(s, limits)
    kwargs: dict[str, Any] = {"model": s.llm_model, "api_key": s.openai_api_key or "not-needed",
                              "parallel_tool_calls": False, "max_tokens": lim.max_tokens_per_reply,
                              "timeout": lim.request_timeout_seconds, "max_retries": 0,
                              "http_client": checked_http_client(s.llm_base_url), **_sampling(lim)}
    if kind == "openai_compatible":
        kwargs.update(base_url=s.llm_base_url, model_info=_model_info())
    return OpenAIChatCompletionClient(**kwargs)


def crewai_llm(settings: Settings | None = None, limits: LLMBudgets | None = None) -> Any:
    """A CrewAI LLM for the configured backend (the offline planner is a `BaseLLM` subclass)."""
    s = settings or get_settings()
    kind = backend(s)
    if kind == "offline":
        from autooptimizer.crews.llm import PlannerLLM

        return PlannerLLM(model="offline-planner")
    from crewai import LLM

    lim = _limits(s, limits)
    kwargs: dict[str, Any] = {"model": f"openai/{s.llm_model}", "api_key": s.openai_api_key or "not-needed",
                              "max_tokens": lim.max_tokens_per_reply, "timeout": lim.request_timeout_seconds,
                              "max_retries": 0, **_sampling(lim)}
    if kind == "openai_compatible":
        kwargs["base_url"] = s.llm_base_url
    return LLM(**kwargs)


def langchain_chat_model(settings: Settings | None = None, limits: LLMBudgets | None = None) -> Any:
    """A LangChain chat model for the configured server, with the same per-reply limits. Bind it to
    `tools.adapters.langchain.langchain_tools(agent, scope=classify(goal).scope)` inside a `run_scope` whose
    RunContext carries a `RunBudget`: the tools then charge the run's tool budgets like AutoGen's and CrewAI's."""
    s = settings or get_settings()
    if backend(s) == "offline":
        from autooptimizer.errors import ConfigError

        raise ConfigError("LangChain needs a model server; the offline planner drives AutoGen and CrewAI only.",
                          "Set AUTOOPT_LLM_BASE_URL (e.g. `autoopt llm serve`) or OPENAI_API_KEY.")
    from langchain_openai import ChatOpenAI

    lim = _limits(s, limits)
    kwargs: dict[str, Any] = {"model": s.llm_model, "api_key": s.openai_api_key or "not-needed",
                              "max_tokens": lim.max_tokens_per_reply, "timeout": lim.request_timeout_seconds,
                              "max_retries": lim.retries, **_sampling(lim)}
    if s.llm_base_url:
        kwargs["base_url"] = s.llm_base_url
    return ChatOpenAI(**kwargs)
