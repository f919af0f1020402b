"""agents/client_base.py: a wrapper built on `DelegatingChatCompletionClient` answers every member as its inner
client does, except what it overrides; `SingleReplyStream` streams exactly the `create` reply."""

from __future__ import annotations

import asyncio
from typing import Any

from autogen_core.models import CreateResult, RequestUsage, SystemMessage, UserMessage

from autooptimizer.agents.autogen_client import MODEL_INFO, PlannerChatCompletionClient
from autooptimizer.agents.budgeted_client import BudgetedChatCompletionClient
from autooptimizer.agents.budgets import LLMBudgets, RunBudget
from autooptimizer.agents.client_base import DelegatingChatCompletionClient
from autooptimizer.agents.guarded_client import GuardedChatCompletionClient
from autooptimizer.agents.protocol import wrap_goal

MESSAGES: list[Any] = [SystemMessage(content="[agent: supervisor] route the goal"),
                       UserMessage(content=wrap_goal("What is the p95 latency?"), source="user")]


class CountingClient(PlannerChatCompletionClient):
    """The planner client's members, with a fixed reply, its own usage numbers and a record of close()."""

    def __init__(self) -> None:
        super().__init__()
        self.closed = 0

    async def create(self, messages: Any, **kwargs: Any) -> CreateResult:
        return CreateResult(finish_reason="stop", content=f"{len(messages)} messages read", cached=False,
                            usage=RequestUsage(prompt_tokens=5, completion_tokens=2))

    async def close(self) -> None:
        self.closed += 1

    def actual_usage(self) -> RequestUsage:
        return RequestUsage(prompt_tokens=7, completion_tokens=3)

    def total_usage(self) -> RequestUsage:
        return RequestUsage(prompt_tokens=70, completion_tokens=30)


async def _stream(client: Any) -> list[Any]:
    return [item async for item in client.create_stream(MESSAGES)]


def test_every_member_passes_through_to_the_inner_client() -> None:
    inner = CountingClient()
    for wrapper in (DelegatingChatCompletionClient(inner), GuardedChatCompletionClient(inner)):
        assert wrapper.model_info is MODEL_INFO and wrapper.capabilities is MODEL_INFO
        assert wrapper.actual_usage() == RequestUsage(prompt_tokens=7, completion_tokens=3)
        assert wrapper.total_usage() == RequestUsage(prompt_tokens=70, completion_tokens=30)
        assert wrapper.count_tokens(MESSAGES) == inner.count_tokens(MESSAGES)
        assert wrapper.remaining_tokens(MESSAGES) == inner.remaining_tokens(MESSAGES)
        assert asyncio.run(wrapper.create(MESSAGES)).content == "2 messages read"
        (item,) = asyncio.run(_stream(wrapper))
        assert isinstance(item, CreateResult) and item.content == "2 messages read"
        asyncio.run(wrapper.close())
    assert inner.closed == 2


def test_the_budgeted_client_streams_its_one_budgeted_reply_and_keeps_its_own_token_count() -> None:
    inner = CountingClient()
    budget = RunBudget(LLMBudgets.model_validate({"contextTokens": 1000}))
    client = BudgetedChatCompletionClient(inner, budget)
    (item,) = asyncio.run(_stream(client))
    assert isinstance(item, CreateResult) and item.content == "2 messages read"
    assert (budget.usage.turns, budget.usage.prompt_tokens) == (1, 5), "the stream went through create's budget"
    assert client.model_info is MODEL_INFO and client.total_usage().prompt_tokens == 70
    assert client.remaining_tokens(MESSAGES) == 1000 - client.count_tokens(MESSAGES)
    asyncio.run(client.close())
    assert inner.closed == 1
