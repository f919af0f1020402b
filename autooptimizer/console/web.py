"""Rendering and guarding console pages: the Jinja2 environment (autoescaped, no `|safe` anywhere), the security
headers of every page, the CSRF cookie, the read and change checks (the API's rules: `api.access`), error pages.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from autooptimizer.api.access import SESSION_COOKIE, Refusal, change_refusal, read_refusal
from autooptimizer.console.session import CSRF_COOKIE, Session, csrf_field, new_csrf_cookie, verify_session
from autooptimizer.settings import Settings

PREFIX = "/ui"
TEMPLATES = Path(__file__).parent / "templates"
# Scripts only from this server (the vendored htmx), no inline script or style, no eval, forms only to this server.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
           "X-Frame-Options": "DENY", "Cache-Control": "no-store"}
COOKIE_FLAGS: dict[str, Any] = {"secure": True, "httponly": True, "samesite": "strict", "path": PREFIX}


def _ts(value: float | None) -> str:
    return "–" if value is None else datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M:%S")


def _dur(value: float | None) -> str:
    if value is None:
        return "–"
    if value < 60:
        return f"{value:.1f} s"
    return f"{int(value // 60)} m {value % 60:.0f} s"


def _num(value: Any, fmt: str = ".4g") -> str:
    if value is None:
        return "–"
    try:
        return format(float(value), fmt)
    except (TypeError, ValueError):
        return str(value)


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


@lru_cache(maxsize=1)
def environment() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters.update(ts=_ts, dur=_dur, num=_num, json=_json)
    return env


def settings_of(request: Request) -> Settings:
    return request.app.state.settings


def session_of(request: Request) -> Session | None:
    token = settings_of(request).api_token
    cookie = request.cookies.get(SESSION_COOKIE)
    return verify_session(cookie, token) if cookie and token else None


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """A page or fragment: common context (session, CSRF field, env), security headers, and the CSRF
    cookie when this browser has none yet."""
    settings = settings_of(request)
    cookie = request.cookies.get(CSRF_COOKIE)
    fresh = cookie is None
    if cookie is None:
        cookie = new_csrf_cookie()
    session = session_of(request)
    html = environment().get_template(template).render(
        request_path=request.url.path, csrf=csrf_field(cookie, request.app.state.console_secret), session=session,
        env=settings.env, token_configured=bool(settings.api_token), **context)
    response = HTMLResponse(html, status_code=status, headers=HEADERS)
    if fresh:
        response.set_cookie(CSRF_COOKIE, cookie, **COOKIE_FLAGS)
    return response


def error_page(request: Request, status: int, problem: str, fix: str = "",
               headers: dict[str, str] | None = None) -> HTMLResponse:
    response = render(request, "error.html", status=status, problem=problem, fix=fix)
    for k, v in (headers or {}).items():
        response.headers[k] = v
    return response


def refused(request: Request, refusal: Refusal) -> HTMLResponse:
    """The API's 401/403 as a page, with the token form to sign in."""
    response = render(request, "login.html", status=refusal.status, message=refusal.message,
                      next_path=request.url.path if request.method == "GET" else PREFIX)
    for k, v in (refusal.headers or {}).items():
        response.headers[k] = v
    return response


def read_guard(request: Request) -> HTMLResponse | None:
    """None when this client may read; else the refusal page (the same statuses as the API)."""
    refusal = read_refusal(request, settings_of(request))
    return None if refusal is None else refused(request, refusal)


def change_guard(request: Request) -> tuple[str | None, HTMLResponse | None]:
    """(actor, None) when the request carries the token (bearer header or console session), else (None, page)."""
    refusal = change_refusal(request, settings_of(request))
    if refusal is not None:
        return None, refused(request, refusal)
    session = session_of(request)
    return (session.actor if session and "authorization" not in request.headers else "api"), None


def safe_next(target: str | None) -> str:
    """A redirect target inside the console only (no scheme, host or protocol-relative URL)."""
    if not target:
        return PREFIX
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith(PREFIX) or target.startswith("//"):
        return PREFIX
    return target


def see_other(target: str) -> Response:
    return RedirectResponse(safe_next(target), status_code=303, headers=HEADERS)
