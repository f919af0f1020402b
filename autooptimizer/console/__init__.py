"""The operator console: server-rendered pages at /ui of `autoopt serve` (same process, settings and token as the
REST API) for what people watch and decide: gates, cycles, approvals, models, traces and chat, audit.

Layout: `pages` (GET pages and the fragments htmx polls), `actions` (POST forms), `web` (rendering, guards,
headers), `session` (the browser session and CSRF), `views/` (read the same state the CLI and API read), `charts`
(SVG geometry), `chat_runs` (chats streaming in the background), `templates/`, `static/` (vendored htmx 2 with its
licence, the stylesheet). The routes are not in the OpenAPI schema (`include_in_schema=False`): they are HTML for
browsers, not API; docs/console.md maps each view to its CLI command and API endpoint.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from fastapi import FastAPI

STATIC = Path(__file__).parent / "static"


def mount(app: FastAPI) -> None:
    """Add the console to the API app (reads `app.state.settings`, `app.state.runner`)."""
    from fastapi.staticfiles import StaticFiles

    from autooptimizer.console.actions import action_router
    from autooptimizer.console.chat_runs import ChatRuns
    from autooptimizer.console.pages import page_router

    app.state.console_secret = secrets.token_bytes(32)  # signs the CSRF fields of this process's forms
    app.state.console_chats = ChatRuns()
    app.include_router(page_router())
    app.include_router(action_router())
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="console-static")
