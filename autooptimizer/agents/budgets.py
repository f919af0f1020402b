"""Hard budgets on every agent run, and the two ways a run ends early: a budget stop and a backend error.

The limits come from the environment profile's `llm:` section (`LLMBudgets`, operators edit it). One `RunBudget`
per run counts what the run spent: model turns, tokens (prompt + completion, as the server reports them, else
estimated at 4 characters a token), tool calls, identical tool calls (same agent, tool and canonical arguments),
wall time, and handoffs. The model wrappers (agents/budgeted_client.py for AutoGen, crews/budgeted_llm.py for
CrewAI) charge the turns and tokens; `tools/adapters/common.call_tool` charges the tool calls, so AutoGen, CrewAI
and LangChain runs are bounded alike.

The first limit hit is sticky: `RunBudget.stop` keeps it, every later charge raises the same `BudgetExceeded`, and
the run's driver (agents/chat.py, crews/crew.py) ends the run with status `budget_exceeded`, the budget's name, the
partial record, the trace and one audit record. A backend failure (`LLMError`) is recorded the same way and ends
the run with status `error` and a reason a person can act on.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

StopKind = Literal["budget_exceeded", "error"]


class LLMBudgets(BaseModel):
    """The profile's `llm:` section: limits per model reply and per run (see docs/agents.md ## Budgets)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    max_tokens_per_reply: int = Field(default=256, alias="maxTokensPerReply", ge=1, le=100_000,
                                      description="sent as max_tokens with every model request")
    request_timeout_seconds: float = Field(default=60.0, alias="requestTimeoutSeconds", gt=0, le=3600,
                                           description="one model request, connection included")
    retries: int = Field(default=1, alias="retries", ge=0, le=10,
                         description="retries of a failed request (connection errors, 408/409/429/5xx)")
    retry_backoff_seconds: float = Field(default=1.0, alias="retryBackoffSeconds", ge=0, le=60,
                                         description="first retry's wait; it doubles per retry")
    max_turns: int = Field(default=40, alias="maxTurns", ge=1, le=10_000, description="model replies per run")
    max_tool_calls: int = Field(default=30, alias="maxToolCalls", ge=1, le=10_000, description="tool calls per run")
    max_identical_tool_calls: int = Field(default=2, alias="maxIdenticalToolCalls", ge=1, le=1000,
                                          description="calls of one tool with the same arguments by one agent")
    max_tokens_per_run: int = Field(default=60_000, alias="maxTokensPerRun", ge=1, le=100_000_000)
    max_wall_seconds: float = Field(default=600.0, alias="maxWallSeconds", gt=0, le=86_400)
    context_tokens: int = Field(default=8192, alias="contextTokens", ge=512, le=10_000_000,
                                description="the model's window: history is trimmed to fit it with the reply")
    max_tool_result_chars: int = Field(default=4000, alias="maxToolResultChars", ge=200, le=1_000_000,
                                       description="a tool result shown to the model is cut to this")
    max_ping_pong: int = Field(default=3, alias="maxPingPong", ge=1, le=100,
                               description="back-and-forth handoffs between two agents with no tool call between")
    temperature: float | None = Field(default=None, alias="temperature", ge=0, le=2,
                                      description="sampling temperature sent with every request (null: the server's)")
    tool_choice: Literal["auto", "required"] = Field(
        default="auto", alias="toolChoice",
        description="required: every reply offered tools must be a tool call, forced by a JSON schema")


class BudgetExceeded(Exception):  # noqa: N818 - the run's status is budget_exceeded
    """A run budget was hit. `budget` names it (the profile key), `limit` and `used` say by how much."""

    def __init__(self, budget: str, limit: float, used: float, detail: str = "") -> None:
        self.budget, self.limit, self.used, self.detail = budget, limit, used, detail
        super().__init__(self.reason)

    @property
    def reason(self) -> str:
        return (f"Budget {self.budget} exceeded (used {self.used:g}, limit {self.limit:g})"
                f"{': ' + self.detail if self.detail else ''}. "
                f"The run stopped; its partial record, trace and audit are kept. Raise llm.{self.budget} in the "
                "profile only if the run was making progress; a looping or weak model will not do better with more.")


class LLMError(Exception):
    """The model backend failed: `kind` is machine-readable (connection, timeout, http_4xx, http_5xx,
    context_overflow, invalid_json, no_choices, malformed_tool_call, unknown_tool, bad_response), `reason` says what
    to do."""

    def __init__(self, kind: str, reason: str) -> None:
        self.kind, self.reason = kind, reason
        super().__init__(f"{kind}: {reason}")


class RunStop(BaseModel):
    """Why a run ended early (in ChatResult / CrewRun and in the audit record)."""

    status: StopKind
    kind: str  # the budget's name, or the LLMError kind
    reason: str


class RunUsage(BaseModel):
    """What a run spent (reported with every result)."""

    turns: int = 0
    tool_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    wall_seconds: float = 0.0
    malformed_calls: int = 0


def _key(agent: str, tool: str, args: Any) -> str:
    try:
        return f"{agent}\x00{tool}\x00{json.dumps(args, sort_keys=True, default=str)}"
    except (TypeError, ValueError, RecursionError):
        return f"{agent}\x00{tool}\x00{args!r}"[:10_000]


class RunBudget:
    """One run's counters against `limits`; thread-safe (CrewAI runs tools in worker threads)."""

    def __init__(self, limits: LLMBudgets | None = None) -> None:
        self.limits = limits or LLMBudgets()
        self.started = time.monotonic()
        self.usage = RunUsage()
        self.stop: RunStop | None = None
        self._identical: dict[str, int] = {}
        self._handoffs: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    # --- stops ----------------------------------------------------------------------------------------------------
    def _exceed(self, budget: str, limit: float, used: float, detail: str = "") -> BudgetExceeded:
        exc = BudgetExceeded(budget, limit, used, detail)
        if self.stop is None:
            self.stop = RunStop(status="budget_exceeded", kind=budget, reason=exc.reason)
        return exc

    def fail(self, exc: LLMError) -> LLMError:
        """Record a backend error as the run's stop (the first stop wins); returns it for `raise`."""
        with self._lock:
            if self.stop is None:
                self.stop = RunStop(status="error", kind=exc.kind, reason=exc.reason)
        return exc

    def raise_if_stopped(self) -> None:
        """Once stopped, every later step raises again, so no framework can carry on after a stop."""
        stop = self.stop
        if stop is None:
            return
        if stop.status == "error":
            raise LLMError(stop.kind, stop.reason)
        raise BudgetExceeded(stop.kind, 0, 0, "the run was already stopped")

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def seconds_left(self) -> float:
        return max(0.0, self.limits.max_wall_seconds - self.elapsed())

    def _check_wall(self) -> None:
        used = self.elapsed()
        if used > self.limits.max_wall_seconds:
            raise self._exceed("maxWallSeconds", self.limits.max_wall_seconds, round(used, 1))

    # --- charges --------------------------------------------------------------------------------------------------
    def charge_turn(self) -> None:
        """Before a model request: the turn, tokens and wall-time budgets."""
        with self._lock:
            self.raise_if_stopped()
            self._check_wall()
            if self.usage.turns + 1 > self.limits.max_turns:
                raise self._exceed("maxTurns", self.limits.max_turns, self.usage.turns + 1)
            tokens = self.usage.prompt_tokens + self.usage.completion_tokens
            if tokens > self.limits.max_tokens_per_run:
                raise self._exceed("maxTokensPerRun", self.limits.max_tokens_per_run, tokens)
            self.usage.turns += 1

    def charge_tokens(self, prompt: int, completion: int) -> None:
        """After a model reply: its tokens; over the run's budget stops the run."""
        with self._lock:
            self.usage.prompt_tokens += max(0, int(prompt))
            self.usage.completion_tokens += max(0, int(completion))
            tokens = self.usage.prompt_tokens + self.usage.completion_tokens
            if tokens > self.limits.max_tokens_per_run:
                raise self._exceed("maxTokensPerRun", self.limits.max_tokens_per_run, tokens)

    def charge_tool(self, agent: str, tool: str, args: Any) -> None:
        """Before a tool call: the tool-call, identical-call (loop guard) and wall-time budgets."""
        with self._lock:
            self.raise_if_stopped()
            self._check_wall()
            if self.usage.tool_calls + 1 > self.limits.max_tool_calls:
                raise self._exceed("maxToolCalls", self.limits.max_tool_calls, self.usage.tool_calls + 1)
            key = _key(agent, tool, args)
            seen = self._identical.get(key, 0) + 1
            if seen > self.limits.max_identical_tool_calls:
                raise self._exceed("maxIdenticalToolCalls", self.limits.max_identical_tool_calls, seen,
                                   f"{agent} called {tool} with the same arguments {seen} times (a loop)")
            self._identical[key] = seen
            self.usage.tool_calls += 1
            self._handoffs.clear()  # work happened: handoffs around it are not a ping-pong

    def note_handoff(self, source: str, target: str) -> None:
        """A handoff; `maxPingPong` back-and-forth pairs between the same two agents, no tool call between, stop."""
        with self._lock:
            self.raise_if_stopped()
            self._handoffs.append((source, target))
            pair = {source, target}
            run = 0
            for s, t in reversed(self._handoffs):
                if {s, t} != pair:
                    break
                run += 1
            if run // 2 >= self.limits.max_ping_pong:
                raise self._exceed("maxPingPong", self.limits.max_ping_pong, run // 2,
                                   f"{source} and {target} handed the turn back and forth with no tool call")

    def note_malformed(self) -> int:
        with self._lock:
            self.usage.malformed_calls += 1
            return self.usage.malformed_calls

    def snapshot(self) -> RunUsage:
        with self._lock:
            return self.usage.model_copy(update={"wall_seconds": round(self.elapsed(), 2)})


def run_budget(env: str | None = None) -> RunBudget:
    """A fresh budget from the profile of `env` (default: the settings' env)."""
    from autooptimizer.profiles import load_profile
    from autooptimizer.settings import get_settings

    return RunBudget(load_profile(env or get_settings().env).llm)


def audit_stop(stop: RunStop, *, env: str, goal: str, run_id: str | None, trace_id: str | None,
               usage: RunUsage, agent: str = "supervisor") -> dict:
    """One audit record for a run that ended on a budget or a backend error."""
    from autooptimizer.agents.intent import goal_digest
    from autooptimizer.policies.audit import AuditLog

    return AuditLog().append({
        "kind": "run_stop", "actor": "runtime", "agent": agent, "tool": None, "env": env,
        "decision": stop.status, "executed": False, "reason": stop.reason, "stop_kind": stop.kind,
        "usage": usage.model_dump(), "run_id": run_id, "trace_id": trace_id, "cycle_id": None, **goal_digest(goal)})
