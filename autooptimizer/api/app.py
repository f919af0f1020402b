"""The optimizer's REST API (FastAPI; OpenAPI docs at /docs): status, metrics, history, trigger, approvals and the
kill switch. Every state-changing endpoint needs `Authorization: Bearer $AUTOOPT_API_TOKEN`: no header -> 401,
a wrong token -> 403, and with no token configured every change is refused (403) — the API fails closed.
"""

from __future__ import annotations

import hmac
import time
from typing import Any, Literal

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from autooptimizer.errors import AutoOptError, InputError, NotFoundError
from autooptimizer.loop.cycle import CycleOptions, CycleRunner
from autooptimizer.loop.scheduler import Scheduler
from autooptimizer.settings import Settings, get_settings

API = "/api/v1/optimizer"


class TriggerIn(BaseModel):
    gate: Literal["ndcg_drop", "p95_latency", "cost_budget", "retries", "deploy_watch"] | None = None
    challenger: str | None = Field(None, max_length=100)
    domain_data: str | None = Field(None, max_length=500)


class DecisionIn(BaseModel):
    note: str = Field("", max_length=1000)


class KillSwitchIn(BaseModel):
    reason: str = Field("", max_length=1000)


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
    app = FastAPI(title="AutoOptimizer API", version="1",
                  description="Status, history and control of the autonomous optimization loop.")
    app.state.runner, app.state.scheduler = runner, scheduler

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
        return JSONResponse(status_code=status, content={"detail": {"problem": exc.problem, "fix": exc.fix}})

    def require_token(authorization: str | None = Header(default=None)) -> str:
        if not authorization or not authorization.lower().startswith("bearer ") or not authorization[7:].strip():
            raise HTTPException(401, "Missing bearer token: send `Authorization: Bearer <AUTOOPT_API_TOKEN>`.",
                                headers={"WWW-Authenticate": "Bearer"})
        expected = settings.api_token
        if not expected:
            raise HTTPException(403, "This API has no AUTOOPT_API_TOKEN configured, so it refuses every change.")
        if not hmac.compare_digest(authorization[7:].strip().encode(), expected.encode()):
            raise HTTPException(403, "Wrong bearer token.")
        return "api"

    # -- reads --------------------------------------------------------------------------------------------------
    @app.get(f"{API}/status")
    def status() -> dict[str, Any]:
        from autooptimizer.gates import evaluate_gates
        from autooptimizer.policies.killswitch import kill_switch

        report = evaluate_gates(env=settings.env)
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

    @app.get(f"{API}/metrics")
    def metrics() -> Response:
        from autooptimizer.api.metrics import render

        body, ctype = render(runner, scheduler)
        return Response(body, media_type=ctype)

    @app.get(f"{API}/history")
    def history(limit: int = Query(20, ge=1, le=500)) -> dict[str, Any]:
        return {"cycles": [_cycle_view(r) for r in runner.journal.list(limit)]}

    @app.get(f"{API}/cycles/{{cycle_id}}")
    def cycle(cycle_id: str) -> dict[str, Any]:
        rec = runner.journal.get(cycle_id)
        return {**_cycle_view(rec), "steps": [s.model_dump() for s in rec.steps], "summary": rec.summary}

    @app.get(f"{API}/approvals")
    def approvals(status: Literal["pending", "approved", "denied", "used"] | None = None) -> dict[str, Any]:
        from autooptimizer.policies.approvals import ApprovalStore

        return {"approvals": [r.model_dump() for r in ApprovalStore().list(status=status)]}

    @app.get(f"{API}/kill-switch")
    def kill_switch_state() -> dict[str, Any]:
        from autooptimizer.policies.killswitch import kill_switch

        return kill_switch.state().model_dump()

    # -- changes (bearer token) -----------------------------------------------------------------------------------
    @app.post(f"{API}/trigger", status_code=202)
    def trigger(body: TriggerIn | None = None, actor: str = Depends(require_token)) -> JSONResponse:
        body = body or TriggerIn()
        cid = runner.trigger(CycleOptions(trigger="api", gate=body.gate, challenger=body.challenger,
                                          domain_data=body.domain_data))
        if cid is None:
            return JSONResponse(status_code=409, content={
                "started": False, "reason": "a cycle is already running", "current_cycle": runner.current_cycle})
        return JSONResponse(status_code=202, content={"started": True, "cycle_id": cid, "at": time.time()})

    @app.post(f"{API}/approvals/{{request_id}}/approve")
    def approve(request_id: str, body: DecisionIn | None = None, actor: str = Depends(require_token)) -> dict:
        from autooptimizer.policies.approvals import ApprovalStore

        return ApprovalStore().approve(request_id, by=actor, note=(body.note if body else "")).model_dump()

    @app.post(f"{API}/approvals/{{request_id}}/deny")
    def deny(request_id: str, body: DecisionIn | None = None, actor: str = Depends(require_token)) -> dict:
        from autooptimizer.policies.approvals import ApprovalStore

        return ApprovalStore().deny(request_id, by=actor, note=(body.note if body else "")).model_dump()

    @app.post(f"{API}/kill-switch/on")
    def kill_on(body: KillSwitchIn | None = None, actor: str = Depends(require_token)) -> dict:
        from autooptimizer.policies.killswitch import kill_switch

        return kill_switch.set(True, by=actor, reason=body.reason if body else "").model_dump()

    @app.post(f"{API}/kill-switch/off")
    def kill_off(body: KillSwitchIn | None = None, actor: str = Depends(require_token)) -> dict:
        from autooptimizer.policies.killswitch import kill_switch

        return kill_switch.set(False, by=actor, reason=body.reason if body else "").model_dump()

    return app
