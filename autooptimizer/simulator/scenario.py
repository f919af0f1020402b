"""A simulator run, validated: what traffic, how fast, for how long, which shift and which fault.

Every run is bounded twice: by `duration` and by `max_requests` (default rate x duration, hard cap 100 000).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

FaultKind = Literal["latency", "errors", "cost", "retries"]
MAX_DURATION_S = 3600.0
MAX_REQUESTS = 100_000


class FaultSpec(BaseModel):
    """A fault injected through the service's POST /admin/faults; it expires after `duration` seconds."""

    kind: FaultKind
    at: float = Field(default=0.0, ge=0, description="seconds after the run starts")
    duration: float = Field(default=30.0, gt=0, le=MAX_DURATION_S)
    latency_ms: float = Field(default=1500.0, gt=0, le=10_000)
    error_rate: float = Field(default=0.5, gt=0, le=1.0)
    cost_multiplier: float = Field(default=50.0, gt=1, le=10_000)
    retries: int = Field(default=3, ge=1, le=10,
                         description="transient failures (so retries) per call while the fault lasts")
    operation: str = Field(default="rerank", description="the pipeline step that fails transiently: bm25 | rerank")

    def payload(self) -> dict[str, object]:
        """The body for POST /admin/faults: only the field this kind of fault sets, plus its duration."""
        body: dict[str, object] = {"duration_s": self.duration}
        if self.kind == "latency":
            body["latency_ms"] = self.latency_ms
        elif self.kind == "errors":
            body["error_rate"] = self.error_rate
        elif self.kind == "cost":
            body["cost_multiplier"] = self.cost_multiplier
        else:
            body["retries"] = {"operation": self.operation, "count": self.retries}
        return body


class Scenario(BaseModel):
    datasets: list[str] = Field(default_factory=lambda: ["scifact"], min_length=1)
    shift_to: str | None = Field(default=None, description="dataset the query mix moves to")
    shift_at: float = Field(default=0.0, ge=0, description="seconds after start; 0 = immediately")
    rate: float = Field(default=10.0, gt=0, le=200, description="requests per second")
    duration: float = Field(default=60.0, gt=0, le=MAX_DURATION_S, description="seconds")
    max_requests: int | None = Field(default=None, ge=1, le=MAX_REQUESTS)
    k: int = Field(default=10, ge=1, le=100)
    split: str | None = Field(default="train",
                              description="query split where a dataset has splits (never SciFact test)")
    max_queries: int | None = Field(default=None, ge=1,
                                    description="replay at most this many judged queries per dataset")
    feedback: bool = True
    fault: FaultSpec | None = None
    seed: int = 0
    concurrency: int = Field(default=16, ge=1, le=64,
                             description="requests in flight at most; beyond that a tick is dropped")

    @model_validator(mode="after")
    def _bounded(self) -> Scenario:
        cap = int(self.rate * self.duration) + 1
        self.max_requests = min(self.max_requests or cap, cap, MAX_REQUESTS)
        return self

    def all_datasets(self) -> list[str]:
        return self.datasets + ([self.shift_to] if self.shift_to and self.shift_to not in self.datasets else [])
