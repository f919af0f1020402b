"""The service's Prometheus metrics (names from metric_names.py), in a registry per app instance."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary

from autooptimizer.search import metric_names as M

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.5, 2.0, 3.0, 5.0)


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
        self.budget.set(budget)
        self._loaded: set[tuple[str, str]] = set()
        self._canaries: set[str] = set()

    def observe_request(self, version: str, seconds: float, ok: bool, compute_seconds: float) -> None:
        self.latency.labels(version).observe(seconds)
        self.requests.labels(version, "ok" if ok else "error").inc()
        if not ok:
            self.errors.labels(version).inc()
        self.compute.labels(version).inc(compute_seconds)
        self.cost.labels(version).inc(compute_seconds * self.price)

    def set_models(self, stable: str, canary: str | None, canary_weight: float) -> None:
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
