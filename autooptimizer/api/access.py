"""Who may read and who may change, for the REST API and the operator console alike.

- Changes need the API token (AUTOOPT_API_TOKEN): `Authorization: Bearer <token>` from a program, or the console's
  session cookie, which is minted only from the token (autooptimizer/console/session.py). No credentials -> 401, a
  wrong token or session -> 403, no token configured -> 403 for every change (fail closed).
- Reads (status, history, cycles, approvals with their evidence, traces, audit) are open to loopback clients and to
  clients in AUTOOPT_READ_NETWORKS (comma-separated CIDRs). Anyone else needs the same credentials as a change, and
  gets the same 401/403 without them.

A reverse proxy on the same host makes every client look like loopback: put the proxy's own authentication in
front, or leave AUTOOPT_READ_NETWORKS empty and have clients send the token.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass

from fastapi import HTTPException, Request

from autooptimizer.settings import Settings

SESSION_COOKIE = "autoopt_session"


@dataclass(frozen=True)
class Refusal:
    """Why a request may not go on: the HTTP status (401/403), the message, and the headers to send."""

    status: int
    message: str
    headers: dict[str, str] | None = None

    def http(self) -> HTTPException:
        return HTTPException(self.status, self.message, headers=self.headers)


def token_refusal(authorization: str | None, expected: str | None) -> Refusal | None:
    """None when `authorization` is `Bearer <expected>`; else 401 without a usable bearer header, 403 with the wrong
    token or when none is configured. Compared in constant time."""
    if not authorization or not authorization.lower().startswith("bearer ") or not authorization[7:].strip():
        return Refusal(401, "Missing bearer token: send `Authorization: Bearer <AUTOOPT_API_TOKEN>`.",
                       {"WWW-Authenticate": "Bearer"})
    if not expected:
        return Refusal(403, "This API has no AUTOOPT_API_TOKEN configured, so it refuses every change.")
    if not hmac.compare_digest(authorization[7:].strip().encode(), expected.encode()):
        return Refusal(403, "Wrong bearer token.")
    return None


def check_token(authorization: str | None, expected: str | None) -> None:
    """Raise the API's 401/403 unless `authorization` carries the expected bearer token."""
    refusal = token_refusal(authorization, expected)
    if refusal is not None:
        raise refusal.http()


def read_networks(settings: Settings) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """AUTOOPT_READ_NETWORKS parsed (the settings already rejected a malformed entry)."""
    return [ipaddress.ip_network(p.strip(), strict=False) for p in settings.read_networks.split(",") if p.strip()]


def reads_open_to(host: str | None, settings: Settings) -> bool:
    """Whether a client at `host` may read without credentials: loopback, or inside AUTOOPT_READ_NETWORKS.
    A host that is not an IP address (a test client's name, a Unix socket) is not trusted."""
    try:
        addr = ipaddress.ip_address(host or "")
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback or any(addr in net for net in read_networks(settings))


def change_refusal(request: Request, settings: Settings) -> Refusal | None:
    """None when the request may change state: a valid bearer header, else a valid console session cookie."""
    header = request.headers.get("authorization")
    if header is not None or SESSION_COOKIE not in request.cookies:
        return token_refusal(header, settings.api_token)
    from autooptimizer.console.session import verify_session

    if not settings.api_token:
        return Refusal(403, "This API has no AUTOOPT_API_TOKEN configured, so it refuses every change.")
    if verify_session(request.cookies[SESSION_COOKIE], settings.api_token) is None:
        return Refusal(403, "Wrong or expired console session: enter the API token again.")
    return None


def read_refusal(request: Request, settings: Settings) -> Refusal | None:
    """None when the request may read: an open client address, else the credentials a change needs."""
    if reads_open_to(request.client.host if request.client else None, settings):
        return None
    refusal = change_refusal(request, settings)
    if refusal is not None and refusal.status == 401:
        return Refusal(401, "Reads are open to loopback clients only (and AUTOOPT_READ_NETWORKS): send "
                       "`Authorization: Bearer <AUTOOPT_API_TOKEN>`.", {"WWW-Authenticate": "Bearer"})
    return refusal


def require_read(request: Request) -> None:
    """FastAPI dependency of every read route: the API's 401/403 for a client reads are not open to."""
    refusal = read_refusal(request, request.app.state.settings)
    if refusal is not None:
        raise refusal.http()
