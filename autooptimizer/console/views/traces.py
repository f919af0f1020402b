"""Traces: the list of traces (cycles and conversations) and one trace's span tree: agent turns, tool calls, PDP
decisions and errors. Same store as `autoopt traces list|show` (`tracing.trace_store()`, AUTOOPT_HOME/traces); the
spans are shown as stored, i.e. already redacted by `tracing.redact` when they were written.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field

from autooptimizer.tracing.store import SpanRecord, TraceSummary

MAX_FIELD = 4000  # characters of a span's inputs/outputs shown inline (the rest: `autoopt traces show`)


class SpanNode(BaseModel):
    span: SpanRecord
    depth: int
    duration_ms: float
    inputs: str = ""
    outputs: str = ""
    decision: str | None = Field(default=None, description="a registry span's PDP decision, when it recorded one")


def list_traces(limit: int = 100) -> list[TraceSummary]:
    from autooptimizer.tracing import trace_store

    return trace_store().list(limit)


def _text(value: Any) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, indent=1, ensure_ascii=False, default=str)
    return text if len(text) <= MAX_FIELD else text[:MAX_FIELD] + "…(truncated)"


def _decision(span: SpanRecord) -> str | None:
    for source in (span.attributes, span.outputs if isinstance(span.outputs, dict) else {}):
        value = source.get("decision") if isinstance(source, dict) else None
        if isinstance(value, str):
            return value
    return None


def span_tree(trace_id: str) -> list[SpanNode]:
    """The trace's spans depth-first (parents before children), each with its depth (NotFoundError when absent)."""
    from autooptimizer.tracing import trace_store, trace_tree

    nodes: list[SpanNode] = []

    def walk(node: dict[str, Any], depth: int) -> None:
        s: SpanRecord = node["span"]
        nodes.append(SpanNode(span=s, depth=depth, duration_ms=round(s.duration_ms, 1), inputs=_text(s.inputs),
                              outputs=_text(s.outputs), decision=_decision(s)))
        for child in node["children"]:
            walk(child, depth + 1)

    for root in trace_tree(trace_store().spans(trace_id)):
        walk(root, 0)
    return nodes
