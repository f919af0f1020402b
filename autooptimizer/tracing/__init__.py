"""Tracing: one trace per conversation, nested spans, a local store and an optional LangSmith upload.

The API the rest of the product uses::

    from autooptimizer.tracing import start_trace, span
    with start_trace("cycle", {"cycle_id": cid}) as trace:
        with trace.span("agent:metrics", kind="agent") as sp:
            sp.set_outputs(...)
"""

from autooptimizer.tracing.redact import install_log_redaction, redact, redact_text
from autooptimizer.tracing.spans import Span, Trace, active_trace_id, span, start_trace, trace_store
from autooptimizer.tracing.store import SpanRecord, TraceStore, render_tree, trace_tree

__all__ = ["Span", "SpanRecord", "Trace", "TraceStore", "active_trace_id", "install_log_redaction", "redact",
           "redact_text", "render_tree", "span", "start_trace", "trace_store", "trace_tree"]
