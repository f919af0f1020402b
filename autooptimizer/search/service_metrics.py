"""The service's Prometheus metrics (names from metric_names.py), in a registry per app instance.

Every labelled series a gate or guard reads exists from start-up at 0: the retries counter for each pipeline
operation, and every per-version series (requests for both statuses, errors, latency histogram, NDCG summary, compute,
cost) as soon as a version is loaded. Why: `increase()`/`rate()` need two samples of a series, so a counter that is
born by its first increment hides that increment (a burst of retries read 0; a new canary's first errors read 0, and
again after every restart). Versions that are unloaded keep their series (counters must not vanish and reappear).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary

from autooptimizer.search import metric_names as M
from autooptimizer.search.pipeline import OPERATIONS
from autooptimizer.search.stages import STAGES

STAGE_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.5, 2.0, 3.0, 5.0)
STATUSES: tuple[str, ...] = ("ok", "error")


class ServiceMetrics:
    def __init__(self, price_per_compute_second: float, budget: float) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.price = price_per_compute_second
        self.latency = Histogram(M.REQUEST_SECONDS, "Search request latency (s)", ["model_version"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.requests = Counter(M.REQUESTS_TOTAL, "Search requests", ["model_version", "status"], registry=r)
        self.errors = Counter(M.ERRORS_TOTAL, "Failed search requests", ["model_version"], registry=r)
        self.retries = Counter(M.RETRIES_TOTAL, "Retries of an operation", ["operation"], registry=r)
        self.ndcg = Summary(M.FEEDBACK_NDCG, "Per-query NDCG@10 from feedback", ["model_version"], registry=r)
        self.compute = Counter(M.COMPUTE_SECONDS_TOTAL, "Compute seconds spent serving", ["model_version"], registry=r)
        self.cost = Counter(M.COST_TOTAL, "Spend: compute seconds x price", ["model_version"], registry=r)
        self.budget = Gauge(M.COST_BUDGET, "Configured budget (dollars)", registry=r)
        self.canary_weight = Gauge(M.CANARY_WEIGHT, "Share of traffic to the canary", ["model_version"], registry=r)
        self.model_info = Gauge(M.MODEL_INFO, "Loaded model versions", ["model_version", "role"], registry=r)
        self.replicas = Gauge(M.REPLICAS, "Worker slots", registry=r)
        self.stage = Histogram(M.STAGE_SECONDS, "Time of one stage of a /search request (s)", ["stage"],
                               buckets=STAGE_BUCKETS, registry=r)
        for stage in STAGES:
            self.stage.labels(stage)
        self.budget.set(budget)
        self._loaded: set[tuple[str, str]] = set()
        self._canaries: set[str] = set()
        for op in OPERATIONS:
            self.retries.labels(op)

    def init_version(self, version: str) -> None:
        """Create every per-version series at 0 (idempotent: `labels()` returns an existing child unchanged)."""
        self.latency.labels(version)
        for status in STATUSES:
            self.requests.labels(version, status)
        self.errors.labels(version)
        self.ndcg.labels(version)
        self.compute.labels(version)
        self.cost.labels(version)

    def observe_request(self, version: str, seconds: float, ok: bool, compute_seconds: float) -> None:
        self.latency.labels(version).observe(seconds)
        self.requests.labels(version, "ok" if ok else "error").inc()
        if not ok:
            self.errors.labels(version).inc()
        self.compute.labels(version).inc(compute_seconds)
        self.cost.labels(version).inc(compute_seconds * self.price)

    def observe_stages(self, spent: dict[str, float]) -> None:
        """One request's stage times (search/stages.py); a stage it did not run is not observed."""
        for stage, seconds in spent.items():
            self.stage.labels(stage).observe(seconds)

    def set_models(self, stable: str, canary: str | None, canary_weight: float) -> None:
        for v in (stable, canary):
            if v is not None:
                self.init_version(v)
        for key in self._loaded:
            self.model_info.remove(*key)
        for v in self._canaries:
            self.canary_weight.remove(v)
        self._loaded = {(stable, "stable")} | ({(canary, "canary")} if canary else set())
        for key in self._loaded:
            self.model_info.labels(*key).set(1)
        self._canaries = {canary} if canary else set()
        if canary:
            self.canary_weight.labels(canary).set(canary_weight)
