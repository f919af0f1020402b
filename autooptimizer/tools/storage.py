"""The devops agent's storage tool: `prune_storage`, the profile's retention policy applied (loop/retention.py).

It takes no targets: what it deletes is computed from the profile and stored state, never named by a caller. Its
facts are `target_checked` (every protected set was read; an unreadable one raises, and the registry denies the
call) and `prune_touches_protected` (the plan would delete a protected object); the Cedar policies
`shared.prune-protection-unchecked` and `shared.prune-protected` refuse the call on either.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from autooptimizer.tools.context import ToolContext
from autooptimizer.tools.registry import tool


class PruneStorageArgs(BaseModel):
    dry_run: bool = Field(False, description="list what would be deleted, delete nothing")


def _prune_facts(args: PruneStorageArgs, ctx: ToolContext) -> dict[str, Any]:
    from autooptimizer.loop.retention import plan

    return {"target_checked": True, "prune_touches_protected": plan(ctx.settings, ctx.profile).touches_protected()}


@tool(name="prune_storage", owner="devops", risk="change", facts=_prune_facts)
def prune_storage(args: PruneStorageArgs, ctx: ToolContext) -> dict[str, Any]:
    """Delete what the profile's retention policy lets go (old model versions, datasets, MLflow runs, cycle
    artifacts, traces, the feedback log's oldest records); never a protected object."""
    from autooptimizer.loop.retention import execute

    return execute(ctx.settings, ctx.profile, dry_run=args.dry_run)
