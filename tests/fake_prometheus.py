"""A tiny local HTTP server that answers /api/v1/query like Prometheus, so the real prometheus-api-client code path
runs in tests that need chosen values, NaN, errors or garbage (the live binary is exercised in test_gates_live)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


def vector(*values: str | float, labels: list[dict] | None = None) -> dict:
    """An instant-query answer with one sample per value."""
    result = [{"metric": (labels or [{}] * len(values))[i], "value": [1.0, str(v)]} for i, v in enumerate(values)]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


class FakeProm:
    """`answer(promql) -> (http_status, body)`; records the queries it saw. `close()` stops the server."""

    def __init__(self, answer: Callable[[str], tuple[int, object]] | None = None) -> None:
        self.answer = answer or (lambda q: (200, vector(1.0)))
        self.seen: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                q = parse_qs(urlparse(self.path).query).get("query", [""])[0]
                fake.seen.append(q)
                status, body = fake.answer(q)
                raw = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *a: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
