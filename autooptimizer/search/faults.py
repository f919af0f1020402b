"""Bounded, expiring fault injection for the traffic simulator (latency, errors, cost, retries).

Every fault has a duration of at most MAX_DURATION_S and bounded magnitudes, so a forgotten fault cannot leave the
service broken. Active faults combine: latencies add, the highest error rate and cost multiplier win.
"""

from __future__ import annotations

import threading
import time
import uuid

from pydantic import BaseModel, Field

MAX_DURATION_S = 600.0


class RetryFault(BaseModel):
    operation: str = Field(pattern=r"^(bm25|rerank)$", description="the pipeline step that fails transiently")
    count: int = Field(ge=0, le=10, description="transient failures before each call succeeds")


class FaultRequest(BaseModel):
    latency_ms: float = Field(default=0.0, ge=0, le=10_000)
    error_rate: float = Field(default=0.0, ge=0, le=1)
    cost_multiplier: float = Field(default=1.0, ge=1, le=10_000)
    retries: RetryFault | None = None
    duration_s: float = Field(default=30.0, gt=0, le=MAX_DURATION_S)


class Fault(FaultRequest):
    id: str
    expires_at: float


class ActiveFaults(BaseModel):
    latency_ms: float = 0.0
    error_rate: float = 0.0
    cost_multiplier: float = 1.0
    retries: dict[str, int] = Field(default_factory=dict)


class FaultBook:
    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def add(self, req: FaultRequest) -> Fault:
        fault = Fault(**req.model_dump(), id=uuid.uuid4().hex[:12], expires_at=time.time() + req.duration_s)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> int:
        with self._lock:
            n = len(self._faults)
            self._faults = []
        return n

    def list(self) -> list[Fault]:
        now = time.time()
        with self._lock:
            self._faults = [f for f in self._faults if f.expires_at > now]
            return list(self._faults)

    def active(self) -> ActiveFaults:
        out = ActiveFaults()
        for f in self.list():
            out.latency_ms += f.latency_ms
            out.error_rate = max(out.error_rate, f.error_rate)
            out.cost_multiplier = max(out.cost_multiplier, f.cost_multiplier)
            if f.retries is not None:
                op = f.retries.operation
                out.retries[op] = max(out.retries.get(op, 0), f.retries.count)
        out.latency_ms = min(out.latency_ms, 10_000)
        return out
