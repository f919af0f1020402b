"""Loopback helpers: free ports and the check that keeps load generators and servers on this machine."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlparse

from autooptimizer.errors import InputError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (bind port 0 and read it back)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def require_loopback(url: str) -> str:
    """Refuse any URL whose host is not a loopback address (127.0.0.0/8, ::1, localhost)."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise InputError(f"Target URL {url!r} is not an http(s) URL.", "Pass e.g. http://127.0.0.1:8700.")
    if not is_loopback_host(parsed.hostname):
        raise InputError(
            f"Target URL {url!r} is not on loopback; the simulator only sends traffic to this machine.",
            "Use a 127.0.0.1 / localhost / ::1 URL.",
        )
    return url.rstrip("/")
