"""The console's changes (POST forms): sign in and out, the kill switch, approve or deny, start a chat.

Each change is checked in the API's order: the token first (bearer header or the console session; 401/403 before
the body is read, as `api.app._TokenFirstRoute`), then the body (size, form), then CSRF (403), then the change
itself through the same library calls the CLI and the API make (`kill_switch.set`, `ApprovalStore.approve/deny`,
`agents.chat.run_chat`). Success redirects back (303); a refusal is a page with the status.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.datastructures import FormData

from autooptimizer.api.access import SESSION_COOKIE, token_refusal
from autooptimizer.console.session import CSRF_COOKIE, CSRF_FIELD, NAME_RE, csrf_refusal, mint_session
from autooptimizer.console.web import (
    COOKIE_FLAGS,
    PREFIX,
    change_guard,
    error_page,
    refused,
    safe_next,
    see_other,
    settings_of,
)

MAX_FORM_BYTES = 64 * 1024
MAX_NOTE = 1000
MAX_GOAL = 2000


async def _form(request: Request) -> tuple[FormData | None, Response | None]:
    """The form, once its size and CSRF token pass; else the refusal page (413 or 403)."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_FORM_BYTES):
        return None, error_page(request, 413, f"The form is larger than {MAX_FORM_BYTES} bytes.",
                                "Shorten the note or goal.")
    form = await request.form(max_files=0, max_fields=20)
    value = form.get(CSRF_FIELD)
    why = csrf_refusal(request.cookies.get(CSRF_COOKIE), value if isinstance(value, str) else None,
                       request.app.state.console_secret, origin=request.headers.get("origin"),
                       host=request.headers.get("host"), fetch_site=request.headers.get("sec-fetch-site"))
    if why is not None:
        return None, error_page(request, 403, f"CSRF check failed: {why}.", "Reload the page and submit it again.")
    return form, None


async def _change(request: Request, check: Callable[[], Response | None] | None = None
                  ) -> tuple[str, FormData] | Response:
    """The actor and form of a change, checked in the API's order: the token (`change_guard`, 401/403), then
    `check` (a refusal of the request itself, e.g. an unknown verb; None lets it pass), then the form (`_form`,
    413/403); else the first refusal page."""
    actor, denied = change_guard(request)
    if actor is None:
        return denied or error_page(request, 403, "Refused.")
    if check is not None and (refusal := check()) is not None:
        return refusal
    form, bad = await _form(request)
    if form is None:
        return bad or error_page(request, 400, "No form.")
    return actor, form


def _text(form: FormData, name: str, limit: int) -> str:
    value = form.get(name)
    return value.strip()[:limit] if isinstance(value, str) else ""


def action_router() -> APIRouter:
    r = APIRouter(include_in_schema=False)

    @r.post("/ui/session")
    async def sign_in(request: Request) -> Response:
        form, bad = await _form(request)
        if form is None:
            return bad or error_page(request, 400, "No form.")
        settings = settings_of(request)
        token = _text(form, "token", 4096)
        refusal = token_refusal(f"Bearer {token}" if token else None, settings.api_token)
        if refusal is not None:
            return refused(request, refusal)
        name = _text(form, "name", 40) or "operator"
        if not NAME_RE.match(name):
            return error_page(request, 400, f"The name {name!r} is not allowed.",
                              "Use up to 40 letters, digits, '.', '_', '@' or '-'.")
        response = see_other(safe_next(_text(form, "next", 500)))
        response.set_cookie(SESSION_COOKIE, mint_session(name, settings.api_token or ""), **COOKIE_FLAGS)
        return response

    @r.post("/ui/session/end")
    async def sign_out(request: Request) -> Response:
        form, bad = await _form(request)
        if form is None:
            return bad or error_page(request, 400, "No form.")
        response = see_other(PREFIX)
        response.delete_cookie(SESSION_COOKIE, path=PREFIX, secure=True, httponly=True, samesite="strict")
        return response

    @r.post("/ui/kill-switch")
    async def kill_switch(request: Request) -> Response:
        from autooptimizer.policies.killswitch import kill_switch as switch

        change = await _change(request)
        if isinstance(change, Response):
            return change
        actor, form = change
        state = _text(form, "state", 10)
        if state not in ("on", "off"):
            return error_page(request, 400, f"Kill switch state {state!r} is not on or off.", "Use the toggle.")
        switch.set(state == "on", by=actor, reason=_text(form, "reason", MAX_NOTE))
        return see_other(safe_next(_text(form, "next", 500)))

    @r.post("/ui/approvals/{request_id}/{verb}")
    async def decide(request: Request, request_id: str, verb: str) -> Response:
        from autooptimizer.errors import InputError, NotFoundError
        from autooptimizer.policies.approvals import ApprovalStore

        def known_verb() -> Response | None:
            return None if verb in ("approve", "deny") else error_page(
                request, 404, f"No action {verb!r} on approvals.", "Use approve or deny.")

        change = await _change(request, known_verb)
        if isinstance(change, Response):
            return change
        actor, form = change
        store = ApprovalStore()
        try:
            answer = store.approve if verb == "approve" else store.deny
            answer(request_id, by=actor, note=_text(form, "note", MAX_NOTE))
        except NotFoundError as exc:
            return error_page(request, 404, exc.problem, exc.fix)
        except InputError as exc:  # already decided: the first decision stands (the API's 409)
            return error_page(request, 409, exc.problem, exc.fix)
        chats = request.app.state.console_chats
        stream = chats.waiting_on(request_id)
        if stream is not None:
            chats.resume(stream, request_id)
        return see_other(safe_next(_text(form, "next", 500)))

    @r.post("/ui/chat")
    async def chat(request: Request) -> Response:
        from autooptimizer.settings import ENVIRONMENTS

        change = await _change(request)
        if isinstance(change, Response):
            return change
        _, form = change
        goal, env = _text(form, "goal", MAX_GOAL), _text(form, "env", 10)
        if not goal:
            return error_page(request, 400, "The goal is empty.", "Say what you want, e.g. 'NDCG dropped, fix it'.")
        if env not in ENVIRONMENTS:
            return error_page(request, 400, f"Unknown environment {env!r}.", f"Use one of {', '.join(ENVIRONMENTS)}.")
        stream = request.app.state.console_chats.start(goal, env)
        return see_other(f"{PREFIX}/chat/{stream}")

    return r
