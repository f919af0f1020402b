"""The run's budgets around any CrewAI LLM (a real model or the offline planner), as agents/budgeted_client.py does
for AutoGen: each call charges a turn and its tokens (estimated at 4 characters a token: CrewAI's providers report
usage unevenly), long tool results in the history are cut to `maxToolResultChars`, backend exceptions become an
`LLMError` with an actionable reason (retried `retries` times with doubling waits when retryable), and a reply
whose tool calls name a tool it was not offered or carry arguments that are not a JSON object is returned to the
model once as a structured error; a second bad reply ends the run."""

from __future__ import annotations

import json
import time
from typing import Any

from crewai.llms.base_llm import BaseLLM
from pydantic import PrivateAttr

from autooptimizer.agents.budgets import BudgetExceeded, LLMError, RunBudget

CHARS_PER_TOKEN = 4


def _names(tools: list[dict] | None) -> set[str]:
    out = set()
    for t in tools or []:
        fn = t.get("function", t) if isinstance(t, dict) else {}
        if isinstance(fn, dict) and fn.get("name"):
            out.add(str(fn["name"]))
    return out


def bad_calls(reply: Any, offered: set[str]) -> str | None:
    """What is wrong with a reply's OpenAI-style tool calls (None when all are well formed)."""
    if not isinstance(reply, list):
        return None
    for item in reply:
        call = item.model_dump() if hasattr(item, "model_dump") else item  # SDK objects or OpenAI-style dicts
        fn = call.get("function", {}) if isinstance(call, dict) else {}
        name = fn.get("name") if isinstance(fn, dict) else None
        if not isinstance(name, str) or name not in offered:
            return f"unknown_tool: {name!r} is not one of your tools ({', '.join(sorted(offered))})"
        raw = fn.get("arguments", "{}")
        try:
            args = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError as exc:
            return f"malformed_tool_call: the arguments of {name} are not valid JSON ({str(exc)[:120]})"
        if not isinstance(args, dict):
            return f"malformed_tool_call: the arguments of {name} must be a JSON object"
    return None


class BudgetedCrewLLM(BaseLLM):
    """Delegates to `inner`; every call is charged to the kickoff's `RunBudget` (set per kickoff)."""

    llm_type: str = "budgeted"
    _inner: Any = PrivateAttr(default=None)
    _budget: RunBudget | None = PrivateAttr(default=None)
    _remote: bool = PrivateAttr(default=False)

    @classmethod
    def wrap(cls, inner: Any, *, remote: bool) -> BudgetedCrewLLM:
        llm = cls(model=str(getattr(inner, "model", "model")))
        llm._inner, llm._remote = inner, remote
        return llm

    @property
    def inner(self) -> Any:
        return self._inner

    def start_run(self, budget: RunBudget) -> None:
        self._budget = budget

    def supports_function_calling(self) -> bool:
        return bool(self._inner.supports_function_calling())

    def supports_stop_words(self) -> bool:
        return bool(self._inner.supports_stop_words())

    def get_context_window_size(self) -> int:
        if self._budget is not None:
            return self._budget.limits.context_tokens
        return int(self._inner.get_context_window_size())

    def _trim(self, messages: str | list[dict]) -> str | list[dict]:
        if isinstance(messages, str) or self._budget is None:
            return messages
        cap = self._budget.limits.max_tool_result_chars
        return [{**m, "content": m["content"][:cap] + " ...[cut]"} if m.get("role") == "tool"
                and isinstance(m.get("content"), str) and len(m["content"]) > cap else m for m in messages]

    def _ask(self, messages: str | list[dict], **kw: Any) -> Any:
        budget = self._budget
        if budget is None:
            return self._inner.call(messages, **kw)
        budget.charge_turn()
        msgs = self._trim(messages)
        attempt = 0
        while True:
            try:
                reply = self._inner.call(msgs, **kw)
                break
            except (BudgetExceeded, LLMError):
                raise
            except Exception as exc:  # noqa: BLE001 - every backend failure becomes an LLMError or a retry
                from autooptimizer.agents.budgeted_client import explain_error, retryable
                from autooptimizer.settings import get_settings

                wait = budget.limits.retry_backoff_seconds * (2 ** attempt)
                if not self._remote or not retryable(exc) or attempt >= budget.limits.retries \
                        or wait >= budget.seconds_left():
                    raise budget.fail(explain_error(exc, get_settings().llm_base_url)) from exc
                attempt += 1
                time.sleep(wait)
        prompt = len(json.dumps(msgs, default=str)) // CHARS_PER_TOKEN
        budget.charge_tokens(prompt, len(json.dumps(reply, default=str)) // CHARS_PER_TOKEN)
        return reply

    def call(self, messages: str | list[dict], tools: list[dict] | None = None, callbacks: list[Any] | None = None,
             available_functions: dict[str, Any] | None = None, from_task: Any = None, from_agent: Any = None,
             response_model: Any = None) -> Any:
        kw = {"tools": tools, "callbacks": callbacks, "available_functions": available_functions,
              "from_task": from_task, "from_agent": from_agent, "response_model": response_model}
        reply = self._ask(messages, **kw)
        offered = _names(tools)
        problem = bad_calls(reply, offered) if offered else None
        if problem is not None and self._budget is not None and not isinstance(messages, str):
            self._budget.note_malformed()
            from autooptimizer.agents.budgeted_client import malformed_feedback

            retry = [*messages, {"role": "assistant", "content": json.dumps(reply, default=str)[:2000]},
                     {"role": "user", "content": malformed_feedback(problem)}]
            reply = self._ask(retry, **kw)
            problem = bad_calls(reply, offered)
            if problem is not None:
                self._budget.note_malformed()
                raise self._budget.fail(LLMError(problem.split(":")[0], f"The model answered with a bad tool call "
                                                 f"twice in a row ({problem}). Use a stronger model (see "
                                                 "`autoopt bench agents`)."))
        return reply

    async def acall(self, *args: Any, **kwargs: Any) -> Any:
        return self.call(*args, **kwargs)
