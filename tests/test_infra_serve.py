"""The service entry point the local stack and the Helm chart run: the deployment's rerank depth is applied."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from autooptimizer.infra.serve import build_app
from autooptimizer.search import model_store
from autooptimizer.search.model_store import ModelSpec
from autooptimizer.search.sample_data import write_tiny_beir


@pytest.mark.parametrize("depth", [None, 7])
def test_rerank_depth_from_the_deployment_reaches_the_service(tmp_path: Path, depth: int | None) -> None:
    data = write_tiny_beir(tmp_path / "tiny")
    model_store.save(ModelSpec(version="bm25-only", kind="bm25", fusion_weight=0.0, rerank_depth=50))
    client = TestClient(build_app([str(data)], "bm25-only", progress=False, rerank_depth=depth))
    assert client.get("/admin/state").json()["rerank_depth_override"] == depth
    hits = client.get("/search", params={"q": "coral reef acidification", "k": 3}).json()["hits"]
    assert len(hits) == 3
