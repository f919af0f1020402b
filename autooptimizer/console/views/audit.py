"""The audit trail: the hash chain's verify status and a searchable, paginated log (newest first).

Same source as `autoopt audit verify` and `autoopt audit show`: `policies.audit.AuditLog`. A search matches a
case-insensitive substring of the record's canonical JSON, so any field (tool, actor, cycle id, policy id,
approval id, reason) can be searched.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

PAGE_SIZE = 50
MAX_QUERY = 200


def audit_records() -> tuple[list[dict[str, Any]], str | None]:
    """Every record in order, and an error when a line could not be read (records before it are kept)."""
    from autooptimizer.policies.audit import AuditLog

    out: list[dict[str, Any]] = []
    it = AuditLog().records()
    while True:
        try:
            out.append(next(it))
        except StopIteration:
            return out, None
        except ValueError as exc:
            return out, f"line {len(out) + 1} of the audit log is not a record ({exc}); run `autoopt audit verify`"


class AuditPage(BaseModel):
    ok: bool
    records_total: int
    problem: str | None = None
    broken_seq: int | None = None
    query: str = ""
    page: int = 1
    pages: int = 1
    matches: int = 0
    rows: list[dict[str, Any]] = Field(default_factory=list)
    read_error: str | None = None


def audit_page(query: str = "", page: int = 1) -> AuditPage:
    """Verify the chain, then the `page`-th page (1-based, PAGE_SIZE records, newest first) of matching records."""
    from autooptimizer.policies.audit import AuditLog, canonical

    report = AuditLog().verify()
    records, error = audit_records()
    needle = query.strip().lower()[:MAX_QUERY]
    hits = [r for r in reversed(records) if not needle or needle in canonical(r).lower()]
    pages = max(1, -(-len(hits) // PAGE_SIZE))
    page = min(max(1, page), pages)
    return AuditPage(ok=report.ok, records_total=report.records, problem=report.problem,
                     broken_seq=report.broken_seq, query=needle, page=page, pages=pages, matches=len(hits),
                     rows=hits[(page - 1) * PAGE_SIZE: page * PAGE_SIZE], read_error=error)
