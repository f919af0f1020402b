"""The local trace store: one JSONL file per trace under AUTOOPT_HOME/traces, one line per finished span.

Always on, so `autoopt traces list|show` work with no LangSmith account.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from autooptimizer.errors import NotFoundError
from autooptimizer.jsonsafe import to_json_safe


class SpanRecord(BaseModel):
    """One finished span as stored: ids, timing, kind, and its (redacted) inputs/outputs/attributes."""

    trace_id: str
    span_id: str
    parent_id: str | None = None
    name: str
    kind: str = "chain"
    start: float
    end: float
    status: str = "ok"
    error: str | None = None
    inputs: Any = None
    outputs: Any = None
    attributes: dict[str, Any] = Field(default_factory=dict)

    @property
    def duration_ms(self) -> float:
        return (self.end - self.start) * 1000


class TraceSummary(BaseModel):
    trace_id: str
    name: str
    start: float
    duration_ms: float
    status: str
    spans: int
    metadata: dict[str, Any] = Field(default_factory=dict)


class TraceStore:
    """Append-only JSONL per trace; readers tolerate a trace still being written (no root yet)."""

    _lock = threading.Lock()

    def __init__(self, root: Path) -> None:
        self.root = root

    def _file(self, trace_id: str) -> Path:
        if not trace_id.isalnum():
            raise NotFoundError(f"Trace id {trace_id!r} is not valid.", "Use an id from `autoopt traces list`.")
        return self.root / f"{trace_id}.jsonl"

    def append(self, record: SpanRecord) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        line = record.model_dump_json() + "\n"
        with self._lock, self._file(record.trace_id).open("a", encoding="utf-8") as fh:
            fh.write(line)

    def spans(self, trace_id: str) -> list[SpanRecord]:
        path = self._resolve(trace_id)
        out = []
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                out.append(SpanRecord.model_validate_json(line))
        return sorted(out, key=lambda s: (s.start, s.end))

    def _resolve(self, trace_id: str) -> Path:
        path = self._file(trace_id)
        if path.is_file():
            return path
        matches = sorted(self.root.glob(f"{trace_id}*.jsonl")) if trace_id.isalnum() and self.root.is_dir() else []
        if len(matches) == 1:
            return matches[0]
        raise NotFoundError(f"No trace {trace_id!r} under {self.root}.", "List traces with `autoopt traces list`.")

    def list(self, limit: int = 50) -> list[TraceSummary]:
        if not self.root.is_dir():
            return []
        out = []
        for path in self.root.glob("*.jsonl"):
            spans = self.spans(path.stem)
            if not spans:
                continue
            root = next((s for s in spans if s.parent_id is None), spans[0])
            out.append(TraceSummary(trace_id=path.stem, name=root.name, start=root.start,
                                    duration_ms=root.duration_ms, status=root.status, spans=len(spans),
                                    metadata=root.attributes.get("metadata", {})))
        return sorted(out, key=lambda t: t.start, reverse=True)[:limit]


def trace_tree(spans: list[SpanRecord]) -> list[dict[str, Any]]:
    """Nest spans by parent id: [{"span": SpanRecord, "children": [...]}]; orphans become roots."""
    ids = {s.span_id for s in spans}
    nodes = {s.span_id: {"span": s, "children": []} for s in spans}
    roots = []
    for s in spans:
        if s.parent_id and s.parent_id in ids:
            nodes[s.parent_id]["children"].append(nodes[s.span_id])
        else:
            roots.append(nodes[s.span_id])
    return roots


def render_tree(spans: list[SpanRecord]) -> str:
    """A plain-text tree: kind, name, duration, status and a one-line summary of the outputs."""
    lines: list[str] = []

    def walk(node: dict[str, Any], prefix: str, last: bool, top: bool) -> None:
        s: SpanRecord = node["span"]
        branch = "" if top else ("└─ " if last else "├─ ")
        note = f"  error: {s.error}" if s.error else ""
        summary = s.attributes.get("summary")
        if summary and not note:
            note = f"  {summary}"
        lines.append(f"{prefix}{branch}[{s.kind}] {s.name} ({s.duration_ms:.0f} ms, {s.status}){note}")
        kids = node["children"]
        for i, child in enumerate(kids):
            walk(child, prefix + ("" if top else ("   " if last else "│  ")), i == len(kids) - 1, False)

    roots = trace_tree(spans)
    for i, node in enumerate(roots):
        walk(node, "", i == len(roots) - 1, True)
    return "\n".join(lines)


def dump_json(value: Any, limit: int = 8000) -> str:
    """JSON text for a span attribute, bounded in size; values JSON cannot hold as they are (nested too deep,
    huge ints, lone surrogates, ...) are written in their `to_json_safe` form instead of raising."""
    try:
        text = json.dumps(value, default=str, ensure_ascii=False)
        text.encode("utf-8")
    except (ValueError, TypeError, RecursionError):  # UnicodeEncodeError is a ValueError
        text = json.dumps(to_json_safe(value), ensure_ascii=False)
    return text if len(text) <= limit else text[:limit] + "…(truncated)"
