"""A synthetic sample source for the A/B judge and the watch: decisions that must not wait for live traffic."""

from __future__ import annotations

import numpy as np

from autooptimizer.loop.abtest import ArmSnapshot


class SyntheticSource:
    """Per-version NDCG@10 samples drawn around a mean and per-request latencies (log-normal around a median, ms);
    Prometheus guards fixed. Every poll 'receives' `per_poll` samples of each."""

    def __init__(self, means: dict[str, float], per_poll: int = 40, p95_ms: float = 50.0,
                 error_rate: dict[str, float] | None = None, seed: int = 0,
                 latency_median_ms: dict[str, float] | None = None) -> None:
        self.means, self.per_poll, self.p95_ms = means, per_poll, p95_ms
        self.error_rate = error_rate or {}
        self.latency_median_ms = latency_median_ms or {}
        self.rng = np.random.default_rng(seed)
        self.latency_rng = np.random.default_rng(seed + 1)  # its own stream: NDCG draws stay as they were
        self.feedback = self

    def samples(self, model_version: str, since: float, until: float | None = None) -> list[float]:
        mean = self.means.get(model_version)
        if mean is None:
            return []
        return list(np.clip(self.rng.normal(mean, 0.1, self.per_poll), 0, 1))

    def latencies(self, model_version: str, since: float, until: float | None = None) -> list[float]:
        median = self.latency_median_ms.get(model_version, 30.0)
        return list(median * np.exp(self.latency_rng.normal(0.0, 0.3, self.per_poll)))

    def snapshot(self, model_version: str, since: float) -> ArmSnapshot:
        return ArmSnapshot(ndcg=self.samples(model_version, since), latency_ms=self.latencies(model_version, since),
                           p95_latency_ms=self.p95_ms, error_rate=self.error_rate.get(model_version, 0.0))
