"""The console's pages and live fragments (GET, read access). Fragments are what htmx polls: the gates, the cycles,
the kill switch, the charts, a running cycle's timeline and a chat's turns.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response

from autooptimizer.console.web import error_page, read_guard, render, settings_of
from autooptimizer.errors import AutoOptError, NotFoundError


def _page(request: Request, template: str, build: Callable[[], dict[str, Any]]) -> Response:
    """Read check, then the template over `build()`; a missing id is a 404 page, a config problem a 409 page."""
    denied = read_guard(request)
    if denied is not None:
        return denied
    try:
        context = build()
    except NotFoundError as exc:
        return error_page(request, 404, exc.problem, exc.fix)
    except AutoOptError as exc:
        return error_page(request, 409, exc.problem, exc.fix)
    return render(request, template, **context)


def page_router() -> APIRouter:
    from autooptimizer.console.views import overview as ov

    r = APIRouter(include_in_schema=False)

    def overview_context(request: Request) -> dict[str, Any]:
        s = settings_of(request)
        return {"gates": ov.read_gates(s), "running": ov.running_cycles(s), "recent": ov.recent_cycles(s),
                "kill": ov.kill_switch_state(), "charts": ov.version_charts(s)}

    @r.get("/ui")
    def overview(request: Request) -> Response:
        return _page(request, "overview.html", lambda: overview_context(request))

    @r.get("/ui/fragments/gates")
    def gates(request: Request) -> Response:
        return _page(request, "_gates.html", lambda: {"gates": ov.read_gates(settings_of(request))})

    @r.get("/ui/fragments/cycles")
    def cycles(request: Request) -> Response:
        s = settings_of(request)
        return _page(request, "_cycles.html", lambda: {"running": ov.running_cycles(s),
                                                       "recent": ov.recent_cycles(s)})

    @r.get("/ui/fragments/kill-switch")
    def kill(request: Request) -> Response:
        return _page(request, "_kill.html", lambda: {"kill": ov.kill_switch_state()})

    @r.get("/ui/fragments/charts")
    def charts(request: Request) -> Response:
        return _page(request, "_charts_panel.html", lambda: {"charts": ov.version_charts(settings_of(request))})

    @r.get("/ui/cycles/{cycle_id}")
    def cycle(request: Request, cycle_id: str) -> Response:
        from autooptimizer.console.views.cycle import read_cycle

        return _page(request, "cycle.html", lambda: {"c": read_cycle(settings_of(request), cycle_id)})

    @r.get("/ui/cycles/{cycle_id}/timeline")
    def timeline(request: Request, cycle_id: str) -> Response:
        from autooptimizer.console.views.cycle import read_cycle

        return _page(request, "_timeline.html", lambda: {"c": read_cycle(settings_of(request), cycle_id)})

    @r.get("/ui/cycles/{cycle_id}/artifacts/{name}")
    def artifact(request: Request, cycle_id: str, name: str) -> Response:
        from autooptimizer.console.views.cycle import artifact_path

        denied = read_guard(request)
        if denied is not None:
            return denied
        try:
            path = artifact_path(settings_of(request), cycle_id, name)
        except NotFoundError as exc:
            return error_page(request, 404, exc.problem, exc.fix)
        if path is None:
            return error_page(request, 404, f"Cycle {cycle_id} has no artifact {name!r}.",
                              "Pick one from the cycle page's artifact list.")
        return FileResponse(path, filename=path.name, content_disposition_type="attachment",
                            headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"})

    @r.get("/ui/approvals")
    def approvals(request: Request) -> Response:
        from autooptimizer.console.views.approvals import approvals as read

        def build() -> dict[str, Any]:
            pending, decided = read(settings_of(request))
            return {"pending": pending, "decided": decided}

        return _page(request, "approvals.html", build)

    @r.get("/ui/models")
    def models(request: Request) -> Response:
        from autooptimizer.console.views.models import read_models

        return _page(request, "models.html", lambda: {"m": read_models(settings_of(request))})

    @r.get("/ui/traces")
    def traces(request: Request) -> Response:
        from autooptimizer.console.views.traces import list_traces

        return _page(request, "traces.html", lambda: {"traces": list_traces()})

    @r.get("/ui/traces/{trace_id}")
    def trace(request: Request, trace_id: str) -> Response:
        from autooptimizer.console.views.traces import span_tree

        return _page(request, "trace.html", lambda: {"trace_id": trace_id, "nodes": span_tree(trace_id)})

    @r.get("/ui/chat")
    def chat(request: Request) -> Response:
        return _page(request, "chat.html", lambda: {"streams": request.app.state.console_chats.all()})

    def stream_context(request: Request, stream_id: str) -> dict[str, Any]:
        from autooptimizer.policies.approvals import ApprovalStore

        stream = request.app.state.console_chats.get(stream_id)
        if stream is None:
            raise NotFoundError(f"No console chat {stream_id!r} (chats are kept while the server runs).",
                                "Start one from the chat page; past conversations are on the traces page.")
        store = ApprovalStore()
        return {"stream": stream, "pending": [store.get(a) for a in stream.pending]}

    @r.get("/ui/chat/{stream_id}")
    def chat_stream(request: Request, stream_id: str) -> Response:
        return _page(request, "chat_stream.html", lambda: stream_context(request, stream_id))

    @r.get("/ui/chat/{stream_id}/turns")
    def chat_turns(request: Request, stream_id: str) -> Response:
        return _page(request, "_turns.html", lambda: stream_context(request, stream_id))

    @r.get("/ui/audit")
    def audit(request: Request, q: str = "", page: str = "1") -> Response:
        from autooptimizer.console.views.audit import audit_page

        number = int(page) if page.isdigit() and len(page) < 7 else 1
        return _page(request, "audit.html", lambda: {"a": audit_page(q, number)})

    @r.get("/ui/login")
    def login(request: Request, next: str = "/ui") -> Response:  # noqa: A002 - the form's field name
        from autooptimizer.console.web import safe_next

        return render(request, "login.html", message=None, next_path=safe_next(next))

    return r
