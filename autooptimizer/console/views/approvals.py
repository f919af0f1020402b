"""Approval requests: the pending queue and the decided ones, each with the exact call, the policy that asked for
approval and the evidence (for a promotion, the A/B result of the cycle that asked).

Same store as `autoopt approvals list|approve|deny` and the API: `policies.approvals.ApprovalStore` (durable,
single-use, bound to the exact call; every decision audited there).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from autooptimizer.console.views.evidence import ABView, read_ab
from autooptimizer.policies.approvals import ApprovalRequest, ApprovalStore
from autooptimizer.settings import Settings


class ApprovalView(BaseModel):
    request: ApprovalRequest
    ab: ABView | None = None
    ab_cycle: str | None = None


def _evidence_cycle(req: ApprovalRequest) -> str | None:
    ev = req.evidence or {}
    cid = ev.get("cycle_id") if isinstance(ev.get("cycle_id"), str) else None
    return cid or req.cycle_id


def approval_view(settings: Settings, req: ApprovalRequest) -> ApprovalView:
    """The request with the A/B result behind it, when the cycle that asked wrote one."""
    from autooptimizer.loop.journal import Journal

    cid = _evidence_cycle(req)
    if cid is None:
        return ApprovalView(request=req)
    rec = Journal(settings).find(cid)
    folder = Path(rec.artifacts_dir) if rec and rec.artifacts_dir else settings.home / "artifacts" / cid
    return ApprovalView(request=req, ab=read_ab(folder, settings.feedback_log), ab_cycle=cid)


def approvals(settings: Settings) -> tuple[list[ApprovalView], list[ApprovalView]]:
    """(pending oldest first, decided newest first)."""
    every = ApprovalStore().list()
    pending = [approval_view(settings, r) for r in every if r.status == "pending"]
    decided = sorted((r for r in every if r.status != "pending"), key=lambda r: r.decided_at or r.created_at,
                     reverse=True)
    return pending, [ApprovalView(request=r) for r in decided[:100]]
