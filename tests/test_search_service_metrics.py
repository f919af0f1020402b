"""Every series a gate or guard reads exists at 0 before its first increment (else `increase()` hides that increment).

Read through the real exposition text (`generate_latest`), as Prometheus scrapes it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import generate_latest
from pydantic import ValidationError

from autooptimizer.search import metric_names as M
from autooptimizer.search import model_store
from autooptimizer.search.beir import Collection, load_beir
from autooptimizer.search.faults import RetryFault
from autooptimizer.search.model_store import ModelSpec
from autooptimizer.search.pipeline import OPERATIONS, SearchPipeline
from autooptimizer.search.sample_data import write_tiny_beir
from autooptimizer.search.service_metrics import LATENCY_BUCKETS, ServiceMetrics


def series(metrics: ServiceMetrics) -> dict[str, float]:
    """`name{labels}` -> value for every sample line of the exposition."""
    out = {}
    for line in generate_latest(metrics.registry).decode().splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def per_version(v: str) -> dict[str, float]:
    """The zero series one loaded version must have."""
    want = {f'{M.REQUESTS_TOTAL}{{model_version="{v}",status="ok"}}': 0.0,
            f'{M.REQUESTS_TOTAL}{{model_version="{v}",status="error"}}': 0.0,
            f'{M.ERRORS_TOTAL}{{model_version="{v}"}}': 0.0,
            f'{M.REQUEST_SECONDS}_count{{model_version="{v}"}}': 0.0,
            f'{M.REQUEST_SECONDS}_sum{{model_version="{v}"}}': 0.0,
            f'{M.REQUEST_SECONDS}_bucket{{le="+Inf",model_version="{v}"}}': 0.0,
            f'{M.FEEDBACK_NDCG}_count{{model_version="{v}"}}': 0.0,
            f'{M.FEEDBACK_NDCG}_sum{{model_version="{v}"}}': 0.0,
            f'{M.COMPUTE_SECONDS_TOTAL}{{model_version="{v}"}}': 0.0,
            f'{M.COST_TOTAL}{{model_version="{v}"}}': 0.0}
    want.update({f'{M.REQUEST_SECONDS}_bucket{{le="{b}",model_version="{v}"}}': 0.0 for b in LATENCY_BUCKETS})
    return want


def test_fresh_metrics_export_zero_retries_for_every_operation() -> None:
    got = series(ServiceMetrics(0.001, 5.0))
    assert OPERATIONS == ("bm25", "rerank")
    assert {k: v for k, v in got.items() if k.startswith(M.RETRIES_TOTAL)} == {
        f'{M.RETRIES_TOTAL}{{operation="bm25"}}': 0.0, f'{M.RETRIES_TOTAL}{{operation="rerank"}}': 0.0}
    assert not any("model_version" in k for k in got)  # no version loaded yet: no per-version series


def test_set_models_creates_zero_series_for_stable_and_canary() -> None:
    sm = ServiceMetrics(0.001, 5.0)
    sm.set_models("v-a", "v-b", 0.2)
    got = series(sm)
    for v in ("v-a", "v-b"):
        for key, value in per_version(v).items():
            assert got.get(key) == value, key
    assert got[f'{M.CANARY_WEIGHT}{{model_version="v-b"}}'] == 0.2


def test_a_new_canary_gets_its_series_and_earlier_counts_survive() -> None:
    sm = ServiceMetrics(0.5, 5.0)
    sm.set_models("v-a", "v-b", 0.5)
    sm.observe_request("v-b", 0.03, ok=False, compute_seconds=0.02)
    sm.retries.labels("rerank").inc(3)
    sm.set_models("v-a", "v-c", 0.5)  # another canary: v-c starts at 0, v-b keeps its counts (no reset to 0)
    sm.set_models("v-a", "v-c", 0.5)  # idempotent
    got = series(sm)
    for key, value in per_version("v-c").items():
        assert got.get(key) == value, key
    assert got[f'{M.ERRORS_TOTAL}{{model_version="v-b"}}'] == 1.0
    assert got[f'{M.REQUESTS_TOTAL}{{model_version="v-b",status="error"}}'] == 1.0
    assert got[f'{M.REQUESTS_TOTAL}{{model_version="v-b",status="ok"}}'] == 0.0
    assert got[f'{M.COST_TOTAL}{{model_version="v-b"}}'] == pytest.approx(0.01)
    assert got[f'{M.RETRIES_TOTAL}{{operation="rerank"}}'] == 3.0
    assert got[f'{M.RETRIES_TOTAL}{{operation="bm25"}}'] == 0.0
    assert f'{M.CANARY_WEIGHT}{{model_version="v-b"}}' not in got  # gauges of the unloaded canary do go


@pytest.mark.parametrize("fusion_weight", [0.0, 0.5])
def test_operations_are_exactly_the_steps_the_pipeline_wraps(tmp_path: Path, fusion_weight: float) -> None:
    collection = Collection([load_beir(write_tiny_beir(tmp_path / "tiny"), name="tiny")])
    pipe = SearchPipeline(ModelSpec(version="t", kind="bm25", fusion_weight=fusion_weight, rerank_depth=5), collection)
    seen: list[str] = []
    pipe.search("heart failure", 3, call=lambda op, fn: seen.append(op) or fn())
    assert seen == list(OPERATIONS)
    for op in OPERATIONS:  # the fault API accepts every operation the metrics pre-create, and nothing else
        assert RetryFault(operation=op, count=1).operation == op
    with pytest.raises(ValidationError):
        RetryFault(operation="encode", count=1)


def test_the_service_exports_a_new_canary_before_its_first_request(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from autooptimizer.search.app import SearchService, create_app

    collection = Collection([load_beir(write_tiny_beir(tmp_path / "tiny"), name="tiny")])
    for v in ("tiny-a", "tiny-b"):
        model_store.save(ModelSpec(version=v, kind="bm25", fusion_weight=0.0, rerank_depth=5))
    svc = SearchService(collection, "tiny-a", api_token="")
    client = TestClient(create_app(svc))
    assert client.post("/admin/models", json={"stable": "tiny-a", "canary": "tiny-b",
                                              "canary_weight": 0.5}).status_code == 200
    got = {}
    for line in client.get("/metrics").text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            got[key] = float(value)
    for v in ("tiny-a", "tiny-b"):
        for key, value in per_version(v).items():
            assert got.get(key) == value, key
