"""The model server's chat-completion reply, checked at the HTTP boundary before the OpenAI SDK and AutoGen read it.

A server that answers 2xx with a body that is not JSON (a proxy's HTML page, a reply cut off mid-way) or with a
chat completion that has no `choices` would otherwise fail deep inside the SDK or AutoGen as a bare
`JSONDecodeError` or `IndexError`. `reply_checker` (an httpx response hook on the client that `agents/llm.py`
builds) raises a `BadReply` naming the problem and the fix instead; the run then ends with status `error`
(`stop_kind` invalid_json / no_choices), like any other model-server failure (agents/budgeted_client.py).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from autooptimizer.agents.budgets import LLMError

SNIPPET = 80  # characters of a bad body quoted in the reason


class BadReply(LLMError):
    """A 2xx reply that is not a usable chat completion (kind invalid_json or no_choices); never retried."""


def reply_problem(body: bytes) -> tuple[str, str] | None:
    """(kind, what is wrong) for a chat-completion body, or None when it is a JSON object whose first choice has a
    message object."""
    try:
        data: Any = json.loads(body)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        text = body[:SNIPPET].decode("utf-8", "replace")
        return "invalid_json", f"a body that is not valid JSON ({exc}; it begins {text!r})"
    if not isinstance(data, dict):
        return "no_choices", f"JSON {type(data).__name__}, not a chat completion object"
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        got = "an empty `choices` list" if choices == [] else f"`choices` = {json.dumps(choices)[:SNIPPET]}"
        return "no_choices", f"a chat completion with no choices ({got})"
    first: Any = choices[0]
    if not isinstance(first, dict) or not isinstance(first.get("message"), dict):  # AutoGen reads choices[0].message
        return "no_choices", f"a chat completion whose first choice has no message ({json.dumps(first)[:SNIPPET]})"
    return None


def bad_reply(kind: str, problem: str, base_url: str | None) -> BadReply:
    """The `BadReply` for `reply_problem`'s answer: the problem, then what to check."""
    where = base_url or "the model server"
    if kind == "invalid_json":
        fix = ("It is not an OpenAI-compatible chat endpoint, or the reply broke off: check that AUTOOPT_LLM_BASE_URL "
               "is the server's address ending in /v1 and AUTOOPT_LLM_MODEL, and the server's log.")
    else:
        fix = ("The server produced no reply: check that AUTOOPT_LLM_MODEL names a model the server has loaded "
               "(and AUTOOPT_LLM_BASE_URL), and the server's log.")
    return BadReply(kind, f"The model server at {where} answered {problem}. {fix}")


def reply_checker(base_url: str | None) -> Callable[[Any], Awaitable[None]]:
    """An httpx response hook: a 2xx `/chat/completions` reply that is not a usable completion raises `BadReply`
    (error statuses are left to the SDK's own errors; a streamed reply is not read here)."""

    async def check(response: Any) -> None:
        if not response.is_success or not response.request.url.path.endswith("/chat/completions"):
            return
        if "event-stream" in response.headers.get("content-type", ""):
            return
        await response.aread()
        problem = reply_problem(response.content)
        if problem is not None:
            raise bad_reply(*problem, base_url)

    return check


def checked_http_client(base_url: str | None) -> Any:
    """The OpenAI SDK's default async HTTP client (its timeouts and limits) with `reply_checker` on every reply."""
    import openai

    return openai.DefaultAsyncHttpxClient(event_hooks={"response": [reply_checker(base_url)]})


def llm_error_in(exc: BaseException) -> LLMError | None:
    """The `LLMError` that `exc` is or was raised from (the SDK wraps an error raised inside its HTTP client in
    `APIConnectionError` ... from it), else None."""
    seen: BaseException | None = exc
    for _ in range(8):  # a short `raise ... from` chain; never a cycle
        if seen is None or isinstance(seen, LLMError):
            return seen
        seen = seen.__cause__
    return None


__all__ = ["BadReply", "checked_http_client", "llm_error_in", "reply_checker", "reply_problem"]
