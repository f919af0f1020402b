"""The run's budgets and error handling around any AutoGen `ChatCompletionClient` (a real model or the planner).

Per request: the turn, token and wall-time budgets are charged (agents/budgets.py); the history is trimmed to the
model's window (`trim`: tool results cut to `maxToolResultChars`, then the oldest turns after the system message and
the goal dropped); the request is bounded by `requestTimeoutSeconds` and retried `retries` times with doubling
waits on a connection error, a timeout, 408/409/429 or 5xx. Any other failure, or the last retry's, is an
`LLMError` with a reason a person can act on (`explain_error`); a 2xx reply that is not JSON or has no choices is
one at once (agents/replies.py, not retried).

Per reply: every tool call must name a tool the agent was offered and carry a JSON object as arguments. A reply that
does not is returned to the model once, as a structured error in a user turn (`malformed_feedback`), and the
model asked again; a second bad reply ends the run with an `LLMError` (malformed_tool_call / unknown_tool).
Handoffs are reported to the budget's ping-pong guard.

`toolChoice: required` forces a tool call from a model whose server does not enforce `tool_choice` (llama.cpp's
generic parser lets a model write text before the call): the tools go as a JSON schema (`response_format`,
grammar-constrained on llama.cpp, vLLM and Ollama; structured outputs on OpenAI) and the JSON answer becomes the
tool call, so the real model's call still reaches the registry, the PDP and the audit log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from autogen_core import CancellationToken, FunctionCall
from autogen_core.models import (
    AssistantMessage,
    ChatCompletionClient,
    CreateResult,
    FunctionExecutionResultMessage,
    LLMMessage,
    SystemMessage,
    UserMessage,
)
from autogen_core.tools import Tool, ToolSchema
from pydantic import BaseModel

from autooptimizer.agents.budgets import BudgetExceeded, LLMError, RunBudget
from autooptimizer.agents.client_base import DelegatingChatCompletionClient, SingleReplyStream
from autooptimizer.agents.replies import llm_error_in

_AGENT = re.compile(r"^\[agent: (\w+)\]")
RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
_OVERFLOW = re.compile(r"context|too long|exceed|maximum.*tokens|n_ctx", re.I)
FORCED_MAX_STR = 120  # characters of a string argument in a forced call
CHARS_PER_TOKEN = 4  # estimate when a server reports no usage, and for trimming (conservative for English)


def _schema(tool: Tool | ToolSchema) -> ToolSchema:
    return tool.schema if isinstance(tool, Tool) else tool


def _text(content: Any) -> str:
    return content if isinstance(content, str) else json.dumps(content, default=str)


class QuietStops(logging.Filter):
    """Drops AutoGen's error logs for a run that a budget or a backend error stopped: the run's result says why
    (status, stop_kind, reason), so a person sees an answer instead of a traceback on stderr."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (isinstance(exc, BudgetExceeded | LLMError) or type(exc).__name__ == "QueueShutDown"
                    or (isinstance(exc, ValueError) and "GroupChatError" in str(exc)))  # the others, told to stop


_QUIET = QuietStops()


def quiet_stops() -> None:
    """Install `QuietStops` on AutoGen's runtime logger (once)."""
    logger = logging.getLogger("autogen_core")
    if _QUIET not in logger.filters:
        logger.addFilter(_QUIET)


def explain_error(exc: BaseException, base_url: str | None = None) -> LLMError:
    """A backend exception as an `LLMError` whose reason names the problem and the fix (an `LLMError` it was raised
    from, e.g. agents/replies.py's `BadReply` for a reply that is not a chat completion, as it is)."""
    if (known := llm_error_in(exc)) is not None:
        return known
    import httpx
    import openai

    where = base_url or "the model server"
    if isinstance(exc, openai.APITimeoutError | asyncio.TimeoutError | TimeoutError | httpx.TimeoutException):
        return LLMError("timeout", f"The model at {where} did not answer within llm.requestTimeoutSeconds. A busy "
                                   "or slow server: raise the timeout, lower llm.maxTokensPerReply, or use a smaller "
                                   "or faster model.")
    if isinstance(exc, openai.APIConnectionError | httpx.ConnectError | ConnectionError):
        return LLMError("connection", f"Cannot reach the model server at {where} ({exc}). Start it "
                                      "(`autoopt llm serve`, or vLLM/Ollama/llama.cpp) or correct "
                                      "AUTOOPT_LLM_BASE_URL.")
    if isinstance(exc, openai.APIStatusError):
        code, body = exc.status_code, str(exc)[:300]
        if code == 400 and _OVERFLOW.search(body):
            return LLMError("context_overflow", f"The conversation no longer fits the model's window ({body}). Set "
                                                "llm.contextTokens in the profile to the server's context size (e.g. "
                                                "`autoopt llm serve --ctx`), or use a model with a larger window.")
        if code in (401, 403):
            return LLMError(f"http_{code}", f"The model server refused the key ({body}). Set OPENAI_API_KEY to a "
                                            "valid key for AUTOOPT_LLM_BASE_URL.")
        if code == 404:
            return LLMError("http_404", f"The model server does not know this model or path ({body}). Check "
                                        "AUTOOPT_LLM_MODEL and that AUTOOPT_LLM_BASE_URL ends in /v1.")
        kind = "http_5xx" if code >= 500 else "http_4xx"
        return LLMError(kind, f"The model server answered {code} ({body}). "
                              + ("It failed or is overloaded: retry later or check its log."
                                 if code >= 500 else "The request was refused: check the model name and server log."))
    return LLMError("bad_response", f"The model call failed: {type(exc).__name__}: {str(exc)[:300]}. Check the "
                                    "server's log; the run stopped.")


def retryable(exc: BaseException) -> bool:
    import httpx
    import openai

    if llm_error_in(exc) is not None:  # a known failure (a bad reply): asking again gets the same answer
        return False
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in RETRYABLE_STATUS
    return isinstance(exc, openai.APIConnectionError | asyncio.TimeoutError | TimeoutError | httpx.TransportError)


def trim(messages: Sequence[LLMMessage], budget_tokens: int, max_result_chars: int) -> list[LLMMessage]:
    """`messages` fitted to `budget_tokens` (estimated): long tool results cut, then the oldest turns after the
    system message(s) and the first user message dropped (a tool result never without its call)."""
    out: list[LLMMessage] = []
    for m in messages:
        if isinstance(m, FunctionExecutionResultMessage):
            cut = [r.model_copy(update={"content": r.content[:max_result_chars] + " ...[cut]"})
                   if len(r.content) > max_result_chars else r for r in m.content]
            m = m.model_copy(update={"content": cut})
        out.append(m)

    def size(ms: Sequence[LLMMessage]) -> int:
        return sum(len(_text(getattr(x, "content", ""))) for x in ms) // CHARS_PER_TOKEN + 4 * len(ms)

    head = 0
    while head < len(out) and isinstance(out[head], SystemMessage):
        head += 1
    if head < len(out) and isinstance(out[head], UserMessage):
        head += 1
    while size(out) > budget_tokens and len(out) > head + 1:
        del out[head]
        while len(out) > head + 1 and isinstance(out[head], FunctionExecutionResultMessage):
            del out[head]  # its call went with the message before
    return out


def malformed(result: CreateResult, offered: set[str]) -> str | None:
    """What is wrong with the reply's tool calls (None when each names an offered tool with JSON-object args)."""
    if not isinstance(result.content, list):
        return None
    for call in result.content:
        if call.name not in offered:
            return f"unknown_tool: {call.name!r} is not one of your tools ({', '.join(sorted(offered))})"
        try:
            args = json.loads(call.arguments or "{}")
        except (ValueError, RecursionError) as exc:
            return f"malformed_tool_call: the arguments of {call.name} are not valid JSON ({str(exc)[:120]})"
        if not isinstance(args, dict):
            return f"malformed_tool_call: the arguments of {call.name} must be a JSON object"
    return None


def malformed_feedback(problem: str) -> str:
    """The structured error the model reads once after a bad tool call."""
    return json.dumps({"error": problem.split(":")[0], "detail": problem,
                       "fix": "Answer again with one tool call from your tools and a JSON object of arguments."})


def forced_schema(tools: Sequence[Tool | ToolSchema]) -> dict:
    """A JSON schema whose every value is one call of one offered tool: {"name": ..., "arguments": {...}}."""
    options = []
    for s in map(_schema, tools):
        params: dict[str, Any] = dict(s.get("parameters") or {"type": "object", "properties": {}})
        params.pop("$defs", None)
        props: dict[str, Any] = dict(params.get("properties") or {})
        for key, prop in props.items():
            if isinstance(prop, dict) and prop.get("type") == "string" and "maxLength" not in prop:
                props[key] = {**prop, "maxLength": FORCED_MAX_STR}
        params["properties"] = props  # a bounded string: a weak model's repetition cannot eat the reply budget
        options.append({"type": "object", "properties": {"name": {"const": s["name"]}, "arguments": params},
                        "required": ["name", "arguments"]})
    return {"anyOf": options}


def work_first(messages: Sequence[LLMMessage], tools: Sequence[Tool | ToolSchema]) -> list[Tool | ToolSchema]:
    """The tools a forced reply may call: an agent that has own tools and has not used one since the last handoff
    must call one of them before it may hand the turn on (else a weak model only hands back and forth)."""
    own = [t for t in tools if not _schema(t)["name"].startswith("transfer_to_")]
    if not own:
        return list(tools)
    for m in reversed(messages):
        if isinstance(m, FunctionExecutionResultMessage):
            names = [r.name for r in m.content]
            if any(not n.startswith("transfer_to_") for n in names):
                return list(tools)  # it worked since the last handoff
            if names:
                break
    return own


def forced_call(result: CreateResult) -> CreateResult:
    """A JSON answer {"name", "arguments"} as a tool call (left as it is when it is not one)."""
    if not isinstance(result.content, str):
        return result
    try:
        data = json.loads(result.content)
    except ValueError:
        data = None
    if not (isinstance(data, dict) and isinstance(data.get("name"), str)):
        call = FunctionCall(id=f"call_{uuid.uuid4().hex[:12]}", name="(forced)", arguments=result.content[:2000])
    else:
        call = FunctionCall(id=f"call_{uuid.uuid4().hex[:12]}", name=data["name"],
                            arguments=json.dumps(data.get("arguments", {})))
    return result.model_copy(update={"content": [call], "finish_reason": "function_calls"})


class BudgetedChatCompletionClient(SingleReplyStream, DelegatingChatCompletionClient):
    """`inner` under `budget` (see the module doc). `remote`: a real model server (timeouts, retries, forcing).
    A stream is the one budgeted `create` reply; usage, close and model info are `inner`'s."""

    def __init__(self, inner: ChatCompletionClient, budget: RunBudget, *, remote: bool = False,
                 base_url: str | None = None) -> None:
        super().__init__(inner)
        self.budget, self.remote, self.base_url = budget, remote, base_url

    async def _ask(self, messages: Sequence[LLMMessage], tools: Sequence[Tool | ToolSchema], tool_choice: Any,
                   json_output: Any, extra: Mapping[str, Any], token: CancellationToken | None) -> CreateResult:
        """One model reply: the turn charged, trimmed, forced if so configured, timed out, retried, counted."""
        limits = self.budget.limits
        self.budget.charge_turn()
        msgs = trim(messages, max(256, limits.context_tokens - limits.max_tokens_per_reply),
                    limits.max_tool_result_chars)
        force = self.remote and limits.tool_choice == "required" and bool(tools)
        args = dict(extra)
        if force:
            args["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "tool_call", "schema": forced_schema(work_first(messages, tools))}}
        attempt = 0
        while True:
            try:
                coro = self.inner.create(msgs, tools=[] if force else tools, tool_choice="auto" if force else
                                         tool_choice, json_output=json_output, extra_create_args=args,
                                         cancellation_token=token)
                if not self.remote:
                    result = await coro
                else:
                    timeout = min(limits.request_timeout_seconds, max(1.0, self.budget.seconds_left()))
                    result = await asyncio.wait_for(coro, timeout + 5)
                break
            except Exception as exc:  # noqa: BLE001 - every backend failure becomes an LLMError or a retry
                if (known := llm_error_in(exc)) is not None:
                    raise self.budget.fail(known) from None
                if not self.remote or not retryable(exc) or attempt >= limits.retries:
                    raise self.budget.fail(explain_error(exc, self.base_url)) from exc
                wait = limits.retry_backoff_seconds * (2 ** attempt)
                if wait >= self.budget.seconds_left():
                    raise self.budget.fail(explain_error(exc, self.base_url)) from exc
                attempt += 1
                await asyncio.sleep(wait)
        usage = result.usage
        prompt, completion = usage.prompt_tokens, usage.completion_tokens
        if self.remote and prompt + completion == 0:  # a server that reports no usage: estimate it
            prompt = sum(len(_text(getattr(m, "content", ""))) for m in msgs) // CHARS_PER_TOKEN
            completion = len(_text(result.content)) // CHARS_PER_TOKEN
        self.budget.charge_tokens(prompt, completion)
        return forced_call(result) if force else result

    async def create(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = [],
                     tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
                     json_output: bool | type[BaseModel] | None = None, extra_create_args: Mapping[str, Any] = {},
                     cancellation_token: CancellationToken | None = None) -> CreateResult:
        offered = {_schema(t)["name"] for t in tools}
        result = await self._ask(messages, tools, tool_choice, json_output, extra_create_args, cancellation_token)
        problem = malformed(result, offered)
        if problem is not None:  # returned to the model once, as a structured error
            self.budget.note_malformed()
            retry = [*messages, AssistantMessage(content=_text(result.content), source="assistant"),
                     UserMessage(content=malformed_feedback(problem), source="runtime")]
            result = await self._ask(retry, tools, tool_choice, json_output, extra_create_args, cancellation_token)
            problem = malformed(result, offered)
            if problem is not None:
                self.budget.note_malformed()
                kind = problem.split(":")[0]
                raise self.budget.fail(LLMError(kind, f"The model answered with a bad tool call twice in a row "
                                                      f"({problem}). This model cannot drive these tools reliably: "
                                                      "use a stronger model (see `autoopt bench agents`)."))
        self._note_handoffs(messages, result)
        return result

    def _note_handoffs(self, messages: Sequence[LLMMessage], result: CreateResult) -> None:
        if not isinstance(result.content, list):
            return
        agent = next((hit.group(1) for msg in messages if isinstance(msg, SystemMessage)
                      and (hit := _AGENT.match(msg.content))), "?")
        for call in result.content:
            if call.name.startswith("transfer_to_"):
                self.budget.note_handoff(agent, call.name.removeprefix("transfer_to_"))

    def count_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        return sum(len(_text(getattr(m, "content", ""))) for m in messages) // CHARS_PER_TOKEN

    def remaining_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        return max(0, self.budget.limits.context_tokens - self.count_tokens(messages, tools=tools))


__all__ = ["BudgetedChatCompletionClient", "explain_error", "trim"]
