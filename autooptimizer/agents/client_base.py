"""Bases for the `ChatCompletionClient`s around the agents, so each holds only what it changes.

AutoGen's `ChatCompletionClient` has ten abstract members. A wrapper (agents/guarded_client.py, budgeted_client.py)
derives from `DelegatingChatCompletionClient`, which passes every one to `inner`, and overrides the few it changes.
`SingleReplyStream` makes `create_stream` yield the one `create` reply, for a client whose every answer must go
through `create` (the budgets are charged there; the offline planner has nothing to stream).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any, Literal

from autogen_core import CancellationToken
from autogen_core.models import ChatCompletionClient, CreateResult, LLMMessage, ModelInfo, RequestUsage
from autogen_core.tools import Tool, ToolSchema
from pydantic import BaseModel


class DelegatingChatCompletionClient(ChatCompletionClient):
    """Every `ChatCompletionClient` member passed through to `inner`."""

    def __init__(self, inner: ChatCompletionClient) -> None:
        self.inner = inner

    async def create(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = [],
                     tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
                     json_output: bool | type[BaseModel] | None = None, extra_create_args: Mapping[str, Any] = {},
                     cancellation_token: CancellationToken | None = None) -> CreateResult:
        return await self.inner.create(messages, tools=tools, tool_choice=tool_choice, json_output=json_output,
                                       extra_create_args=extra_create_args, cancellation_token=cancellation_token)

    async def create_stream(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = [],
                            tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
                            json_output: bool | type[BaseModel] | None = None,
                            extra_create_args: Mapping[str, Any] = {},
                            cancellation_token: CancellationToken | None = None
                            ) -> AsyncGenerator[str | CreateResult, None]:
        async for item in self.inner.create_stream(
                messages, tools=tools, tool_choice=tool_choice, json_output=json_output,
                extra_create_args=extra_create_args, cancellation_token=cancellation_token):
            yield item

    async def close(self) -> None:
        await self.inner.close()

    def actual_usage(self) -> RequestUsage:
        return self.inner.actual_usage()

    def total_usage(self) -> RequestUsage:
        return self.inner.total_usage()

    def count_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        return self.inner.count_tokens(messages, tools=tools)

    def remaining_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        return self.inner.remaining_tokens(messages, tools=tools)

    @property
    def capabilities(self) -> Any:  # deprecated in AutoGen, still abstract
        return self.inner.capabilities

    @property
    def model_info(self) -> ModelInfo:
        return self.inner.model_info


class SingleReplyStream(ChatCompletionClient):
    """`create_stream` as one item: the `create` reply (mix in before `DelegatingChatCompletionClient`)."""

    async def create_stream(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = [],
                            tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
                            json_output: bool | type[BaseModel] | None = None,
                            extra_create_args: Mapping[str, Any] = {},
                            cancellation_token: CancellationToken | None = None
                            ) -> AsyncGenerator[str | CreateResult, None]:
        yield await self.create(messages, tools=tools, tool_choice=tool_choice, json_output=json_output,
                                extra_create_args=extra_create_args, cancellation_token=cancellation_token)


__all__ = ["DelegatingChatCompletionClient", "SingleReplyStream"]
