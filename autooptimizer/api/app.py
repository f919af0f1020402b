"""The optimizer's REST API (FastAPI; OpenAPI docs at /docs): status, metrics, history, trigger, approvals and the
kill switch. Every state-changing endpoint needs `Authorization: Bearer $AUTOOPT_API_TOKEN`: no header -> 401,
a wrong token -> 403, and with no token configured every change is refused (403) — the API fails closed. Reads are
open to loopback clients and AUTOOPT_READ_NETWORKS; anyone else needs the token too (`api.access`). The operator
console (`autooptimizer.console`) is served from the same app at /ui.

The token is checked before the request body is read (`_TokenFirstRoute`), so a caller without it gets 401/403
whatever it sends, never a parser's 400/422. Every answer the API gives is in its OpenAPI schema (`responses=`);
tests/reliability/test_api_fuzz.py holds the server to that with Schemathesis.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Security
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute, APIRouter
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from autooptimizer.api.access import check_token, require_read
from autooptimizer.errors import AutoOptError, InputError, NotFoundError
from autooptimizer.loop.cycle import CycleOptions, CycleRunner
from autooptimizer.loop.scheduler import Scheduler
from autooptimizer.settings import Settings, get_settings

API = "/api/v1/optimizer"


class TriggerIn(BaseModel):
    gate: Literal["ndcg_drop", "p95_latency", "cost_budget", "retries", "deploy_watch"] | None = None
    challenger: str | None = Field(default=None, max_length=100)
    domain_data: str | None = Field(default=None, max_length=500)


class DecisionIn(BaseModel):
    note: str = Field(default="", max_length=1000)


class KillSwitchIn(BaseModel):
    reason: str = Field(default="", max_length=1000)


class Detail(BaseModel):
    detail: str


class ProblemFix(BaseModel):
    problem: str
    fix: str


class ProblemOut(BaseModel):
    detail: ProblemFix


class TriggerBusy(BaseModel):
    started: Literal[False]
    reason: str
    current_cycle: str | None


class SafeJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped: an error that echoes the caller's input (FastAPI's 422 does) cannot fail to
    encode, e.g. on an unpaired surrogate such as `"\\ud800"`, which used to turn a 422 into a 500."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


_AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": Detail, "description": "No bearer token (`Authorization: Bearer <AUTOOPT_API_TOKEN>`)."},
    403: {"model": Detail, "description": "Wrong token, or no AUTOOPT_API_TOKEN configured (every change refused)."},
    400: {"model": Detail, "description": "The body could not be read as JSON."},
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ProblemOut, "description": "No such id."}}
_READ_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": Detail, "description": "Not a loopback client or in AUTOOPT_READ_NETWORKS, and no bearer token."},
    403: {"model": Detail, "description": "Not a loopback client or in AUTOOPT_READ_NETWORKS, and a wrong token."},
}


class _TokenFirstRoute(APIRoute):
    """A state-changing route: the token is checked before FastAPI reads or validates the body."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            check_token(request.headers.get("authorization"), request.app.state.settings.api_token)
            return await handler(request)

        return guarded


def _cycle_view(rec: Any) -> dict[str, Any]:
    return {"id": rec.id, "status": rec.status, "outcome": rec.outcome, "gate": rec.gate, "trigger": rec.trigger,
            "env": rec.env, "started_at": rec.started_at, "finished_at": rec.finished_at,
            "duration_seconds": rec.duration_seconds, "artifacts_dir": rec.artifacts_dir, "trace_id": rec.trace_id,
            "reason": (rec.summary or {}).get("reason")}


def create_app(settings: Settings | None = None, *, runner: CycleRunner | None = None,
               scheduler: Scheduler | None = None, start_scheduler: bool = True) -> FastAPI:
    from autooptimizer.tools import load_all_tools

    load_all_tools()  # a broken policy file stops the API at start, naming the file
    settings = settings or get_settings()
    runner = runner or CycleRunner(settings)
    scheduler = scheduler or Scheduler(runner)
    app = FastAPI(title="AutoOptimizer API", version="1", default_response_class=SafeJSONResponse,
                  description="Status, history and control of the autonomous optimization loop.")
    app.state.runner, app.state.scheduler, app.state.settings = runner, scheduler, settings
    writes = APIRouter(route_class=_TokenFirstRoute, responses=_AUTH_RESPONSES)
    reads = APIRouter(dependencies=[Depends(require_read)], responses=_READ_RESPONSES)
    bearer = HTTPBearer(auto_error=False, description="AUTOOPT_API_TOKEN; every change needs it.")

    if start_scheduler:
        @app.on_event("startup")
        def _start() -> None:  # noqa: ANN202
            scheduler.start()

        @app.on_event("shutdown")
        def _stop() -> None:  # noqa: ANN202
            scheduler.stop()

    @app.exception_handler(AutoOptError)
    async def _autoopt_error(request: Request, exc: AutoOptError) -> JSONResponse:
        status = 404 if isinstance(exc, NotFoundError) else 400 if isinstance(exc, InputError) else 409
        return SafeJSONResponse(status_code=status, content={"detail": {"problem": exc.problem, "fix": exc.fix}})

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code in (204, 304):
            return Response(status_code=exc.status_code, headers=exc.headers)
        return SafeJSONResponse(status_code=exc.status_code, content={"detail": exc.detail}, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return SafeJSONResponse(status_code=422, content={"detail": jsonable_encoder(exc.errors())})

    def require_token(request: Request, _: HTTPAuthorizationCredentials | None = Security(bearer)) -> str:
        """Names the actor; `_TokenFirstRoute` has already checked (checked again here: no route without it)."""
        check_token(request.headers.get("authorization"), settings.api_token)
        return "api"

    def decide(request_id: str, status: Literal["approved", "denied"], actor: str, note: str) -> dict[str, Any]:
        """A second decision of the same request is a conflict (409), not bad input: the first one stands. An
        unknown id stays a 404 (NotFoundError is no InputError)."""
        from autooptimizer.policies.approvals import ApprovalStore

        store = ApprovalStore()
        try:
            answer = store.approve if status == "approved" else store.deny
            return answer(request_id, by=actor, note=note).model_dump()
        except InputError as exc:
            raise HTTPException(409, {"problem": exc.problem, "fix": exc.fix}) from exc

    # -- liveness (open: it reveals no state; the Helm chart's readiness probe, which comes from the node) ----------
    @app.get(f"{API}/health", responses={503: {"model": Detail, "description": "The cycle journal is unreadable."}})
    def health() -> JSONResponse:
        try:
            runner.journal.list(1)
        except Exception:  # noqa: BLE001 - any failure to read the journal means not ready
            return SafeJSONResponse(status_code=503, content={"detail": "the cycle journal cannot be read"})
        return SafeJSONResponse(status_code=200, content={"ok": True})

    # -- reads --------------------------------------------------------------------------------------------------
    @reads.get(f"{API}/status")
    def status() -> dict[str, Any]:
        from autooptimizer.gates import evaluate_gates
        from autooptimizer.policies.killswitch import kill_switch

        report = evaluate_gates(env=settings.env, anchor=scheduler.anchor.read())
        current = runner.current_cycle
        running = [c for c in runner.journal.running()]
        cur = runner.journal.get(current) if current else (running[0] if running else None)
        ks = kill_switch.state()
        last = runner.journal.last_finished()
        return {
            "is_running": cur is not None or runner.is_running(),
            "env": settings.env,
            "quality_gates_status": {g.name: g.status for g in report.gates},
            "quality_gates": report.public()["gates"],
            "next_cycle_in_minutes": scheduler.next_cycle_in_minutes(),
            "scheduler_enabled": scheduler.enabled,
            "kill_switch": {"on": ks.on, "by": ks.by, "reason": ks.reason, "at": ks.at},
            "current_cycle": None if cur is None else {**_cycle_view(cur), "steps": [
                {"name": s.name, "status": s.status} for s in cur.steps]},
            "last_cycle": None if last is None else _cycle_view(last),
        }

    @reads.get(f"{API}/metrics", response_class=Response,
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                              "description": "Prometheus text exposition format."}})
    def metrics() -> Response:
        from autooptimizer.api.metrics import render

        body, ctype = render(runner, scheduler)
        return Response(body, media_type=ctype)

    @reads.get(f"{API}/history")
    def history(limit: int = Query(20, ge=1, le=500)) -> dict[str, Any]:
        return {"cycles": [_cycle_view(r) for r in runner.journal.list(limit)]}

    @reads.get(f"{API}/cycles/{{cycle_id}}", responses=_NOT_FOUND)
    def cycle(cycle_id: str) -> dict[str, Any]:
        rec = runner.journal.get(cycle_id)
        return {**_cycle_view(rec), "steps": [s.model_dump() for s in rec.steps], "summary": rec.summary}

    @reads.get(f"{API}/approvals")
    def approvals(status: Literal["pending", "approved", "denied", "used"] | None = None) -> dict[str, Any]:
        from autooptimizer.policies.approvals import ApprovalStore

        return {"approvals": [r.model_dump() for r in ApprovalStore().list(status=status)]}

    @reads.get(f"{API}/kill-switch")
    def kill_switch_state() -> dict[str, Any]:
        from autooptimizer.policies.killswitch import kill_switch

        return kill_switch.state().model_dump()

    # -- changes (bearer token, checked before the body is read) --------------------------------------------------
    @writes.post(f"{API}/trigger", status_code=202,
                 responses={409: {"model": TriggerBusy, "description": "A cycle is already running."}})
    def trigger(body: TriggerIn | None = None, actor: str = Depends(require_token)) -> JSONResponse:
        body = body or TriggerIn()
        cid = runner.trigger(CycleOptions(trigger="api", gate=body.gate, challenger=body.challenger,
                                          domain_data=body.domain_data))
        if cid is None:
            return SafeJSONResponse(status_code=409, content={
                "started": False, "reason": "a cycle is already running", "current_cycle": runner.current_cycle})
        return SafeJSONResponse(status_code=202, content={"started": True, "cycle_id": cid, "at": time.time()})

    decided = {**_NOT_FOUND, 409: {"model": ProblemOut, "description": "The request was already decided."}}

    @writes.post(f"{API}/approvals/{{request_id}}/approve", responses=decided)
    def approve(request_id: str, body: DecisionIn | None = None, actor: str = Depends(require_token)) -> dict:
        return decide(request_id, "approved", actor, body.note if body else "")

    @writes.post(f"{API}/approvals/{{request_id}}/deny", responses=decided)
    def deny(request_id: str, body: DecisionIn | None = None, actor: str = Depends(require_token)) -> dict:
        return decide(request_id, "denied", actor, body.note if body else "")

    @writes.post(f"{API}/kill-switch/on")
    def kill_on(body: KillSwitchIn | None = None, actor: str = Depends(require_token)) -> dict:
        from autooptimizer.policies.killswitch import kill_switch

        return kill_switch.set(True, by=actor, reason=body.reason if body else "").model_dump()

    @writes.post(f"{API}/kill-switch/off")
    def kill_off(body: KillSwitchIn | None = None, actor: str = Depends(require_token)) -> dict:
        from autooptimizer.policies.killswitch import kill_switch

        return kill_switch.set(False, by=actor, reason=body.reason if body else "").model_dump()

    app.include_router(reads)
    app.include_router(writes)
    from autooptimizer.console import mount

    mount(app)
    return app
