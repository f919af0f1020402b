"""The console's browser session and its CSRF protection; the token itself is never stored in the browser.

Session: after a person enters the API token once, the browser gets `autoopt_session` (Secure, HttpOnly,
SameSite=Strict, no expiry attribute: it ends with the browser session). Its value is a signed claim
`base64url({"n": name, "t": issued, "r": nonce}).hmac` whose key is derived from AUTOOPT_API_TOKEN, so a server
restart keeps sessions, a changed token ends all of them, and the value reveals nothing about the token. Sessions
last at most SESSION_MAX_AGE_S.

CSRF (signed double submit, OWASP): every browser gets a random `autoopt_csrf` cookie (Secure, HttpOnly,
SameSite=Strict); every form carries `csrf` = HMAC(per-process secret, that cookie). A POST is refused (403) unless
the two match and, when the browser sends them, `Origin` is this server and `Sec-Fetch-Site` is not cross-site.
A form issued before a server restart is refused too (the secret changed): reload the page.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time

from pydantic import BaseModel, Field, ValidationError

CSRF_COOKIE = "autoopt_csrf"
CSRF_FIELD = "csrf"
SESSION_MAX_AGE_S = 12 * 3600
NAME_RE = re.compile(r"^[A-Za-z0-9._@-]{1,40}$")


class Session(BaseModel):
    """Who the operator said they are (`decided_by` shows `console:<name>`) and when the session began."""

    name: str = Field(pattern=NAME_RE.pattern)
    issued: float
    nonce: str = Field(min_length=16, max_length=64)

    @property
    def actor(self) -> str:
        return f"console:{self.name}"


def _key(token: str) -> bytes:
    return hashlib.sha256(b"autoopt-console-session\x00" + token.encode()).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def mint_session(name: str, token: str, now: float | None = None) -> str:
    """The cookie value for a new session of `name` (validated by the caller with NAME_RE)."""
    claim = {"n": name, "t": time.time() if now is None else now, "r": secrets.token_hex(16)}
    payload = _b64(json.dumps(claim, separators=(",", ":")).encode())
    return f"{payload}.{hmac.new(_key(token), payload.encode(), hashlib.sha256).hexdigest()}"


def verify_session(value: str, token: str, now: float | None = None) -> Session | None:
    """The session a cookie value proves, or None (bad signature, malformed, expired, or from another token)."""
    payload, _, sig = value.partition(".")
    want = hmac.new(_key(token), payload.encode(), hashlib.sha256).hexdigest()
    if not sig or not hmac.compare_digest(sig.encode(), want.encode()):
        return None
    try:
        raw = json.loads(_unb64(payload))
        session = Session(name=raw["n"], issued=float(raw["t"]), nonce=raw["r"])
    except (ValueError, KeyError, TypeError, ValidationError):
        return None
    age = (time.time() if now is None else now) - session.issued
    return session if 0 <= age <= SESSION_MAX_AGE_S else None


def new_csrf_cookie() -> str:
    return secrets.token_urlsafe(32)


def csrf_field(cookie: str, secret: bytes) -> str:
    """The value every form of this browser carries."""
    return hmac.new(secret, b"csrf\x00" + cookie.encode(), hashlib.sha256).hexdigest()


def csrf_refusal(cookie: str | None, field: str | None, secret: bytes, *, origin: str | None, host: str | None,
                 fetch_site: str | None) -> str | None:
    """None when a POST passes the CSRF checks; else the reason it does not."""
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return f"cross-site request refused (Sec-Fetch-Site: {fetch_site})"
    if origin is not None and host is not None and origin.split("://", 1)[-1] != host:
        return "the form was sent from another origin"
    if not cookie or not field:
        return "the form carries no CSRF token; reload the page and send it again"
    if not hmac.compare_digest(field.encode(), csrf_field(cookie, secret).encode()):
        return "the form's CSRF token does not match (expired by a server restart?); reload the page"
    return None
