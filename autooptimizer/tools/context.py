"""What a tool call acts on, passed to the tool as an argument: `def f(args: FArgs, ctx: ToolContext)`.

The registry builds one `ToolContext` per call from its caller's explicit arguments (env, cycle id, trace id,
sample source) and the process settings, and hands the same object to the tool's `facts` and to the tool. A reader
sees from a signature what a tool acts on: `ctx.env`'s profile, `ctx.release()` (the GitOps repository and deployer
of that env), `ctx.source()` (the A/B judge's live numbers: the running cycle's source, else the live one).

The only ContextVar left here is `current_trace_id`, read by tracing: a chat run's tool calls join its trace.
"""

from __future__ import annotations

import contextvars
from collections.abc import Generator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from autooptimizer.gates import AnchorRead
    from autooptimizer.loop.abtest import SampleSource
    from autooptimizer.loop.release import Release
    from autooptimizer.profiles import Profile
    from autooptimizer.settings import Settings

current_trace_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("autoopt_trace_id", default=None)


@dataclass
class ToolContext:
    """One call's context. `release` and `sample_source` may be given by the caller (the cycle shares its own);
    otherwise they are built on first use for `env`."""

    env: str
    settings: Settings
    trace_id: str
    cycle_id: str | None = None
    sample_source: SampleSource | None = None
    release_: Release | None = field(default=None, repr=False)

    @cached_property
    def profile(self) -> Profile:
        """The environment profile of this call's env."""
        from autooptimizer.profiles import load_profile

        return load_profile(self.env)

    def release(self) -> Release:
        """GitOps repository + deployer + journal for this call's env (built once per call)."""
        if self.release_ is None:
            from autooptimizer.loop.release import Release

            self.release_ = Release(self.settings, env=self.env)
        return self.release_

    def source(self) -> SampleSource:
        """Where the A/B judge reads live numbers: the running cycle's source, else the live one."""
        if self.sample_source is None:
            from autooptimizer.loop.signals import LiveSource

            self.sample_source = LiveSource(self.settings)
        return self.sample_source

    def ndcg_anchor(self) -> AnchorRead:
        """The NDCG gate's anchor for the current champion, as the gates compare with it (read-only here)."""
        from autooptimizer.loop.anchor import AnchorStore

        return AnchorStore.for_settings(self.settings).read()

    def describe(self) -> dict[str, Any]:
        """The labels recorded with the call (never policy facts)."""
        return {"env": self.env, "cycle_id": self.cycle_id, "trace_id": self.trace_id}


@contextmanager
def trace_scope(trace_id: str | None) -> Generator[None, None, None]:
    """Label every tool call made inside this block with `trace_id` (tracing only; never a policy fact)."""
    token = current_trace_id.set(trace_id) if trace_id is not None else None
    try:
        yield
    finally:
        if token is not None:
            current_trace_id.reset(token)
