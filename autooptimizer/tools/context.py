"""Ambient call context: the cycle, trace and environment a tool call belongs to.

The loop sets the cycle once (`with cycle_scope("c-42"): ...`) and every registry call inside it is
recorded under that cycle id in the audit trail, without threading the id through each agent.
Nothing here can grant a policy fact: these values are labels for the record, never PDP context.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

current_cycle_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("autoopt_cycle_id", default=None)
current_trace_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("autoopt_trace_id", default=None)
current_env: contextvars.ContextVar[str | None] = contextvars.ContextVar("autoopt_env", default=None)


def call_env() -> str:
    """The environment of the tool call in progress (set by `ToolRegistry.call`), else AUTOOPT_ENV.

    Tools read thresholds, costs and GitOps paths for this env, so `chat --env staging` acts on staging.
    """
    from autooptimizer.settings import get_settings

    return current_env.get() or get_settings().env


@contextmanager
def cycle_scope(cycle_id: str | None = None, trace_id: str | None = None) -> Iterator[None]:
    """Label every tool call made inside this block with `cycle_id` / `trace_id`."""
    tokens = []
    if cycle_id is not None:
        tokens.append((current_cycle_id, current_cycle_id.set(cycle_id)))
    if trace_id is not None:
        tokens.append((current_trace_id, current_trace_id.set(trace_id)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)
