"""A `ChatCompletionClient` wrapper that keeps a model's tool-call arguments parseable.

AutoGen parses each tool call's arguments with `json.loads` before any tool (and so before the registry) sees
them, and `json.loads` raises RecursionError on text nested about 1,000 levels deep: the run would crash with no
decision and no audit record. This wrapper scans the arguments text first (linearly, no parsing); arguments
nested deeper than the registry's limit (`MAX_DEPTH`) are replaced by a small stand-in that is still too deep
for the registry and names what happened, so the call reaches `REGISTRY.call`, is denied there
(`registry.args-too-deep`) and is audited like any other call.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any, Literal

from autogen_core import CancellationToken, FunctionCall
from autogen_core.models import CreateResult, LLMMessage
from autogen_core.tools import Tool, ToolSchema
from pydantic import BaseModel

from autooptimizer.agents.client_base import DelegatingChatCompletionClient
from autooptimizer.jsonsafe import MAX_DEPTH, json_text_depth


def stand_in(arguments: str, depth: int) -> str:
    """JSON arguments one level deeper than the registry allows, with a note on the original."""
    nested: Any = "cut"
    for _ in range(MAX_DEPTH):
        nested = [nested]
    note = (f"the model's arguments ({len(arguments)} characters) were nested {depth} levels deep; they were cut "
            f"before parsing (the limit is {MAX_DEPTH})")
    return json.dumps({"note": note, "arguments": nested})


def guard_result(result: CreateResult) -> CreateResult:
    """`result` with every too-deep tool-call argument text replaced by its stand-in."""
    if not isinstance(result.content, list):
        return result
    calls = []
    for call in result.content:
        depth = json_text_depth(call.arguments) if isinstance(call, FunctionCall) else 0
        calls.append(dataclasses.replace(call, arguments=stand_in(call.arguments, depth)) if depth > MAX_DEPTH
                     else call)
    return result.model_copy(update={"content": calls})


class GuardedChatCompletionClient(DelegatingChatCompletionClient):
    """Delegates everything to `inner`; only the tool-call arguments of its answers are checked."""

    async def create(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = [],
                     tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
                     json_output: bool | type[BaseModel] | None = None, extra_create_args: Mapping[str, Any] = {},
                     cancellation_token: CancellationToken | None = None) -> CreateResult:
        return guard_result(await self.inner.create(
            messages, tools=tools, tool_choice=tool_choice, json_output=json_output,
            extra_create_args=extra_create_args, cancellation_token=cancellation_token))

    async def create_stream(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = [],
                            tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
                            json_output: bool | type[BaseModel] | None = None,
                            extra_create_args: Mapping[str, Any] = {},
                            cancellation_token: CancellationToken | None = None
                            ) -> AsyncGenerator[str | CreateResult, None]:
        async for item in self.inner.create_stream(
                messages, tools=tools, tool_choice=tool_choice, json_output=json_output,
                extra_create_args=extra_create_args, cancellation_token=cancellation_token):
            yield guard_result(item) if isinstance(item, CreateResult) else item


def guarded(client: Any) -> Any:
    """`client` wrapped once (a client already guarded is returned as it is)."""
    return client if isinstance(client, GuardedChatCompletionClient) else GuardedChatCompletionClient(client)
