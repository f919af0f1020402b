"""Traces and spans: one trace per conversation (a chat, a crew kickoff, a loop cycle); agent turns, LLM calls,
tool calls and PDP decisions are nested spans.

Built on OpenTelemetry, so AutoGen's own GenAI spans (`invoke_agent`, `execute_tool`) nest inside ours through
the OTel context. Processors decide where finished spans go: the local JSONL store (always) and LangSmith's
OTLP endpoint (`langsmith.integrations.otel.OtelSpanProcessor`) when LANGSMITH_API_KEY and LANGSMITH_ENDPOINT are
set. Everything that reaches a processor is redacted first.

    with start_trace("chat", {"goal": goal}) as trace:
        with trace.span("agent:metrics", kind="agent", inputs={...}) as sp:
            sp.set_outputs({...})
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from autooptimizer.tracing.redact import redact, redact_text
from autooptimizer.tracing.store import SpanRecord, TraceStore, dump_json

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor

log = logging.getLogger(__name__)

KINDS = ("chain", "agent", "llm", "tool", "policy")
_LANGSMITH_KIND = {"chain": "chain", "agent": "chain", "llm": "llm", "tool": "tool", "policy": "chain"}
_lock = threading.RLock()
_provider: Any = None
_traces: dict[str, _TraceState] = {}
_langsmith: dict[tuple[str, str], Any] = {}


@dataclass
class _TraceState:
    store: TraceStore
    root: Any
    exporters: set[tuple[str, str]] = field(default_factory=set)
    open_spans: list[Any] = field(default_factory=list)


def _hex_trace(ctx: Any) -> str:
    return format(ctx.trace_id, "032x")


def _hex_span(span_id: int) -> str:
    return format(span_id, "016x")


class _LocalProcessor:
    """Writes every finished span of an active trace to that trace's JSONL file."""

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        state = _traces.get(_hex_trace(span.context))
        if state is not None:
            state.open_spans.append(span)

    def _on_ending(self, span: Any) -> None:
        return None

    def on_end(self, span: Any) -> None:
        tid = _hex_trace(span.context)
        state = _traces.get(tid)
        if state is None:
            return
        with contextlib.suppress(ValueError):
            state.open_spans.remove(span)
        if (span.attributes or {}).get("gen_ai.operation.name") == "create_agent":
            return  # construction noise, not part of the conversation
        try:
            state.store.append(_record(span))
        except Exception:  # noqa: BLE001 - tracing never breaks a run
            log.exception("could not store span %s", span.name)

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class _RedactingExporterProcessor:
    """Forwards spans of traces started with this LangSmith config, with attributes redacted."""

    def __init__(self, key: tuple[str, str], inner: Any) -> None:
        self.key, self.inner = key, inner

    def _ours(self, span: Any) -> bool:
        state = _traces.get(_hex_trace(span.context))
        return state is not None and self.key in state.exporters

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        if self._ours(span):
            self.inner.on_start(span, parent_context)

    def _on_ending(self, span: Any) -> None:
        return None

    def on_end(self, span: Any) -> None:
        if not self._ours(span):
            return
        from opentelemetry.sdk.trace import ReadableSpan

        attrs = {k: (redact_text(v) if isinstance(v, str) else v) for k, v in (span.attributes or {}).items()}
        clean = ReadableSpan(name=span.name, context=span.context, parent=span.parent, resource=span.resource,
                             attributes=attrs, events=span.events, links=span.links, kind=span.kind,
                             status=span.status, start_time=span.start_time, end_time=span.end_time,
                             instrumentation_scope=span.instrumentation_scope)
        self.inner.on_end(clean)

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def _record(span: Any) -> SpanRecord:
    attrs = dict(span.attributes or {})
    kind = attrs.pop("autoopt.kind", None)
    op = attrs.get("gen_ai.operation.name")
    if kind is None:
        kind = {"invoke_agent": "agent", "create_agent": "agent", "execute_tool": "tool"}.get(str(op), "chain")

    def load(key: str) -> Any:
        raw = attrs.pop(key, None)
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except (TypeError, ValueError, RecursionError):
            return raw

    inputs, outputs, metadata = load("autoopt.inputs"), load("autoopt.outputs"), load("autoopt.metadata")
    for k in ("gen_ai.prompt", "gen_ai.completion", "langsmith.span.kind", "langsmith.trace.name"):
        attrs.pop(k, None)
    error = attrs.pop("autoopt.error", None)
    status = "error" if (error or span.status.status_code.name == "ERROR") else "ok"
    if status == "error" and not error:
        error = span.status.description
    extra = {k: v if isinstance(v, str | int | float | bool) else list(v) for k, v in attrs.items()}
    if metadata is not None:
        extra["metadata"] = metadata
    return SpanRecord(trace_id=_hex_trace(span.context), span_id=_hex_span(span.context.span_id),
                      parent_id=_hex_span(span.parent.span_id) if span.parent else None, name=span.name, kind=kind,
                      start=span.start_time / 1e9, end=(span.end_time or time.time_ns()) / 1e9, status=status,
                      error=error, inputs=redact(inputs), outputs=redact(outputs), attributes=redact(extra))


def _get_provider() -> Any:
    """The SDK TracerProvider (installed globally once, so AutoGen's tracer finds it) with our local processor."""
    global _provider
    with _lock:
        if _provider is not None:
            return _provider
        from opentelemetry import trace as ot
        from opentelemetry.sdk.trace import TracerProvider

        current = ot.get_tracer_provider()
        if isinstance(current, TracerProvider):
            provider = current
        else:
            provider = TracerProvider()
            ot.set_tracer_provider(provider)
            theirs = ot.get_tracer_provider()
            if theirs is not provider and isinstance(theirs, TracerProvider):  # another library won the race
                provider = theirs
        # duck-typed SpanProcessors: the OpenTelemetry SDK is optional, so they cannot subclass it at import time
        provider.add_span_processor(cast("SpanProcessor", _LocalProcessor()))
        _provider = provider
        return provider


def _langsmith_key() -> tuple[str, str] | None:
    from autooptimizer.settings import get_settings

    s = get_settings()
    if not (s.langsmith_api_key and s.langsmith_endpoint):
        return None
    key = (s.langsmith_endpoint.rstrip("/"), s.langsmith_api_key)
    with _lock:
        if key not in _langsmith:
            from langsmith.integrations.otel import OtelSpanProcessor
            from opentelemetry.sdk.trace.export import SimpleSpanProcessor

            inner = OtelSpanProcessor(api_key=key[1], url=key[0], SpanProcessor=SimpleSpanProcessor)
            proc = _RedactingExporterProcessor(key, inner)
            _get_provider().add_span_processor(proc)
            _langsmith[key] = proc
    return key


class Span:
    """A handle on one open span: set inputs, outputs, a one-line summary, or an error."""

    def __init__(self, otel_span: Any, kind: str) -> None:
        self._span = otel_span
        self.kind = kind

    @property
    def span_id(self) -> str:
        return _hex_span(self._span.get_span_context().span_id)

    @property
    def trace_id(self) -> str:
        return _hex_trace(self._span.get_span_context())

    def set_inputs(self, value: Any) -> None:
        text = dump_json(redact(value))
        self._span.set_attribute("autoopt.inputs", text)
        self._span.set_attribute("gen_ai.prompt", text)

    def set_outputs(self, value: Any) -> None:
        text = dump_json(redact(value))
        self._span.set_attribute("autoopt.outputs", text)
        self._span.set_attribute("gen_ai.completion", text)

    def set(self, key: str, value: str | int | float | bool) -> None:
        self._span.set_attribute(key, redact_text(value) if isinstance(value, str) else value)

    def summary(self, text: str) -> None:
        self.set("summary", text[:300])

    def set_error(self, message: str) -> None:
        from opentelemetry.trace import Status, StatusCode

        clean = redact_text(message)[:2000]
        self._span.set_attribute("autoopt.error", clean)
        self._span.set_status(Status(StatusCode.ERROR, clean))


def _parent_context() -> Any:
    """The OTel context to nest under: the current span if it belongs to an active trace; otherwise (a worker
    thread that lost the context) the most recently started open span of the latest active trace."""
    from opentelemetry import trace as ot

    cur = ot.get_current_span()
    ctx = cur.get_span_context()
    if ctx.is_valid and _hex_trace(ctx) in _traces:
        return None
    with _lock:
        states = list(_traces.values())
    if not states:
        return None
    state = states[-1]
    anchor = state.open_spans[-1] if state.open_spans else state.root
    return ot.set_span_in_context(anchor)


@contextlib.contextmanager
def span(name: str, kind: str = "chain", inputs: Any = None, **attrs: str | int | float | bool) -> Iterator[Span]:
    """Open a nested span under whatever is current (outside any trace the span is simply not stored)."""
    if kind not in KINDS:
        raise ValueError(f"span kind {kind!r} not in {KINDS}")
    tracer = _get_provider().get_tracer("autooptimizer")
    parent = _parent_context()
    with tracer.start_as_current_span(name, context=parent, record_exception=False,
                                      set_status_on_exception=False) as otel_span:
        handle = Span(otel_span, kind)
        otel_span.set_attribute("autoopt.kind", kind)
        otel_span.set_attribute("langsmith.span.kind", _LANGSMITH_KIND[kind])
        for k, v in attrs.items():
            handle.set(k, v)
        if inputs is not None:
            handle.set_inputs(inputs)
        try:
            yield handle
        except BaseException as exc:
            handle.set_error(f"{type(exc).__name__}: {exc}")
            raise


class Trace(Span):
    """The root span of one conversation; `trace.span(...)` opens children."""

    def span(self, name: str, kind: str = "chain", inputs: Any = None,
             **attrs: str | int | float | bool) -> contextlib.AbstractContextManager[Span]:
        return span(name, kind, inputs, **attrs)


def trace_store() -> TraceStore:
    from autooptimizer.settings import get_settings

    return TraceStore(get_settings().path("traces", ".keep").parent)


@contextlib.contextmanager
def start_trace(name: str, metadata: dict[str, Any] | None = None, inputs: Any = None) -> Iterator[Trace]:
    """Open a new trace (a new OTel trace id, whatever is current) and make it current for everything inside.

    Registry calls made inside are labelled with this trace id in the audit log.
    """
    from opentelemetry import context as otel_context
    from opentelemetry import trace as ot

    from autooptimizer.tools.context import trace_scope

    tracer = _get_provider().get_tracer("autooptimizer")
    ls_key = _langsmith_key()
    store = trace_store()
    meta = redact(metadata or {})
    root_ctx = otel_context.Context()  # empty: a fresh trace id, never a child of an outer trace
    otel_span = tracer.start_span(name, context=root_ctx)
    tid = _hex_trace(otel_span.get_span_context())
    state = _TraceState(store=store, root=otel_span, exporters={ls_key} if ls_key else set(), open_spans=[otel_span])
    with _lock:
        _traces[tid] = state
    handle = Trace(otel_span, "chain")
    otel_span.set_attribute("autoopt.kind", "chain")
    otel_span.set_attribute("langsmith.span.kind", "chain")
    otel_span.set_attribute("langsmith.trace.name", name)
    otel_span.set_attribute("autoopt.metadata", dump_json(meta))
    for k, v in meta.items():
        if isinstance(v, str | int | float | bool):
            otel_span.set_attribute(f"langsmith.metadata.{k}", v)
    if inputs is not None:
        handle.set_inputs(inputs)
    try:
        with ot.use_span(otel_span, end_on_exit=False, record_exception=False, set_status_on_exception=False), \
                trace_scope(tid):
            yield handle
    except BaseException as exc:
        handle.set_error(f"{type(exc).__name__}: {exc}")
        raise
    finally:
        otel_span.end()
        if ls_key:
            try:
                _langsmith[ls_key].force_flush(10000)
            except Exception:  # noqa: BLE001
                log.warning("LangSmith upload of trace %s failed", tid)
        with _lock:
            _traces.pop(tid, None)


def active_trace_id() -> str | None:
    """The trace id of the current context, else of the latest active trace (worker threads), else None."""
    from opentelemetry import trace as ot

    ctx = ot.get_current_span().get_span_context()
    if ctx.is_valid and _hex_trace(ctx) in _traces:
        return _hex_trace(ctx)
    with _lock:
        return next(reversed(_traces), None) if _traces else None
