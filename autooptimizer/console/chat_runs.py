"""Chats started from the console: `agents.chat.run_chat` / `resume_chat` in a background thread, with the agents'
turns collected as they stream (the same lines `autoopt chat` prints) so the page can poll them.

Only the stream of lines lives here, in memory and bounded (MAX_STREAMS, MAX_LINES); the durable state is the
chat's own: its paused run under AUTOOPT_HOME/runs, its approvals in the approvals store, its trace in the trace
store. A paused chat resumes from there after a restart, from the CLI or from the console.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from typing import Any

from pydantic import BaseModel, Field

MAX_STREAMS = 50
MAX_LINES = 2000


class ChatStream(BaseModel):
    id: str
    goal: str
    env: str
    started_at: float
    status: str = "running"  # running | completed | paused | refused | failed
    lines: list[str] = Field(default_factory=list)
    pending: list[str] = Field(default_factory=list, description="approval ids the paused chat waits on")
    trace_ids: list[str] = Field(default_factory=list)
    answer: str = ""
    error: str | None = None


class ChatRuns:
    """The console's chat streams; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._streams: OrderedDict[str, ChatStream] = OrderedDict()

    def get(self, stream_id: str) -> ChatStream | None:
        with self._lock:
            stream = self._streams.get(stream_id)
            return stream.model_copy(deep=True) if stream else None

    def all(self) -> list[ChatStream]:
        with self._lock:
            return [s.model_copy(deep=True) for s in reversed(self._streams.values())]

    def waiting_on(self, approval_id: str) -> str | None:
        with self._lock:
            return next((s.id for s in self._streams.values() if approval_id in s.pending), None)

    def _append(self, stream_id: str, line: str) -> None:
        with self._lock:
            stream = self._streams.get(stream_id)
            if stream is not None and len(stream.lines) < MAX_LINES:
                stream.lines.append(line)

    def _finish(self, stream_id: str, result: Any = None, error: str | None = None) -> None:
        with self._lock:
            stream = self._streams.get(stream_id)
            if stream is None:
                return
            if error is not None:
                stream.status, stream.error, stream.pending = "failed", error, []
                return
            stream.status, stream.answer = result.status, result.answer
            stream.pending = list(result.pending_approvals) if result.status == "paused" else []
            stream.trace_ids.append(result.trace_id)

    def _run(self, stream_id: str, work: Any) -> None:
        from autooptimizer.errors import AutoOptError

        def run() -> None:
            try:
                self._finish(stream_id, work(lambda line: self._append(stream_id, line)))
            except AutoOptError as exc:
                self._finish(stream_id, error=f"{exc.problem} {exc.fix}")
            except Exception as exc:  # noqa: BLE001 - shown on the page; the chat's own trace has the details
                self._finish(stream_id, error=f"{type(exc).__name__}: {str(exc)[:500]}")

        threading.Thread(target=run, name=f"console-chat-{stream_id}", daemon=True).start()

    def start(self, goal: str, env: str) -> str:
        """Run `goal` in `env` in the background; returns the stream id."""
        from autooptimizer.agents.chat import run_chat

        stream = ChatStream(id=uuid.uuid4().hex[:12], goal=goal, env=env, started_at=time.time())
        with self._lock:
            self._streams[stream.id] = stream
            while len(self._streams) > MAX_STREAMS:
                self._streams.popitem(last=False)
        self._run(stream.id, lambda say: run_chat(goal, env, on_message=say))
        return stream.id

    def resume(self, stream_id: str, approval_id: str) -> None:
        """Continue the paused chat of `stream_id` once `approval_id` is decided (its lines join the same stream)."""
        from autooptimizer.agents.chat import resume_chat

        with self._lock:
            stream = self._streams.get(stream_id)
            if stream is None:
                return
            stream.status, stream.pending = "running", []
            stream.lines.append(f"[approvals] {approval_id} decided in the console; resuming")
        self._run(stream_id, lambda say: resume_chat(approval_id, on_message=say))
