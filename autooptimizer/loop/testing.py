"""A small real search service for loop tests and smoke runs: a tiny BEIR corpus and cheap `bm25` model versions,
served by the real FastAPI app on a free loopback port (no MiniLM load, starts in about a second).

Also a synthetic SampleSource, for tests of the cycle's decisions that must not wait for live traffic.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from autooptimizer.loop.abtest import ArmSnapshot


def make_versions(names: list[str]) -> list[str]:
    """Save one cheap `bm25` model version per name (distinct content via `params`)."""
    from autooptimizer.search import model_store
    from autooptimizer.search.model_store import ModelSpec

    for i, name in enumerate(names):
        if not model_store.exists(name):
            model_store.save(ModelSpec(version=name, kind="bm25", fusion_weight=0.0, params={"n": i}))
    return names


class TinyService:
    """The real search app over a tiny corpus, in a uvicorn thread; sets AUTOOPT_SEARCH_PORT for the settings."""

    def __init__(self, root: Path, stable: str, replicas: int = 1) -> None:
        from autooptimizer.infra.stack import UvicornThread
        from autooptimizer.search.app import SearchService, create_app
        from autooptimizer.search.beir import load_collection
        from autooptimizer.search.sample_data import write_tiny_beir

        data = write_tiny_beir(root / "tiny")
        self.service = SearchService(load_collection([str(data)]), stable, replicas=replicas)
        self.server = UvicornThread(create_app(self.service)).start()
        os.environ["AUTOOPT_SEARCH_PORT"] = str(self.server.port)

    @property
    def url(self) -> str:
        return self.server.url

    def stop(self) -> None:
        self.server.stop()


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
