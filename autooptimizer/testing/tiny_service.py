"""A small real search service: a tiny BEIR corpus and cheap `bm25` model versions, served by the real FastAPI app
on a free loopback port (no MiniLM load; starts in about a second). For tests, smoke runs and the fault suite."""

from __future__ import annotations

import os
from pathlib import Path


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
