"""Test double: a small real OpenAI-protocol HTTP server (stdlib, 127.0.0.1, free port) that answers
/v1/chat/completions on cue, for failures a real model cannot produce on demand (an endless reply, a 400 context
overflow, a 5xx, a hang, malformed tool-call JSON, a made-up tool, the same call forever).

    with ScriptedLLM([reply(tool=("transfer_to_metrics", {"message": "go"})), ...]) as llm:
        llm.url  # -> http://127.0.0.1:PORT/v1 ; llm.requests: every request body received

Each cue answers one request, in order; the last cue repeats. A cue is a dict: {"status": 400, "error": "..."} for an
error answer, {"hang": seconds} to answer only after that long, {"raw": "text"} (optionally "content_type") to send
that body verbatim with 200 (a malformed server), or a chat completion (`reply(...)`).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def reply(text: str | None = None, tool: tuple[str, Any] | None = None, finish: str | None = None,
          prompt_tokens: int = 100, completion_tokens: int = 20) -> dict:
    """A chat completion: text, or one tool call (name, args; args given as a str are sent verbatim)."""
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if tool is not None:
        name, args = tool
        message["tool_calls"] = [{"id": f"call_{time.monotonic_ns()}", "type": "function",
                                  "function": {"name": name,
                                               "arguments": args if isinstance(args, str) else json.dumps(args)}}]
    return {"id": "chatcmpl-scripted", "object": "chat.completion", "created": int(time.time()), "model": "scripted",
            "choices": [{"index": 0, "message": message,
                         "finish_reason": finish or ("tool_calls" if tool else "stop")}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


class ScriptedLLM:
    def __init__(self, cues: list[dict]) -> None:
        self.cues = list(cues)
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
                with outer._lock:
                    outer.requests.append(body)
                    cue = outer.cues[min(len(outer.requests), len(outer.cues)) - 1]
                if "hang" in cue:
                    time.sleep(cue["hang"])
                    cue = reply("too late")
                status = int(cue.get("status", 200))
                payload = cue if status == 200 else {"error": {"message": cue.get("error", "scripted error"),
                                                               "type": "invalid_request_error", "code": status}}
                data = cue["raw"].encode() if "raw" in cue else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", cue.get("content_type", "application/json"))
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (a timeout test)
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ScriptedLLM:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
