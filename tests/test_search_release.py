"""Releasing a swapped-out version (search/release.py): after an operator's cross-encoder is rolled back, no
reference to its pipeline, reranker or model survives in the service, a request still running on it cannot load it
back into the process caches, and the service process's RSS returns near where it was before the swap."""

from __future__ import annotations

import sys
import time
import weakref
from pathlib import Path

import httpx
import pytest

from autooptimizer.infra.memory import rss_bytes, trim_heap
from autooptimizer.infra.net import free_port
from autooptimizer.search import encoder, model_store
from autooptimizer.search.app import SearchService
from autooptimizer.search.beir import Collection, load_beir
from autooptimizer.search.model_store import ModelSpec
from autooptimizer.search.rerankers import cross_encoder
from autooptimizer.search.sample_data import write_tiny_beir

QUERIES = ["wing flutter in supersonic flow", "ocean acidification coral reef", "heart failure treatment",
           "soil erosion after rain"]


def _versions() -> None:
    model_store.save(ModelSpec(version="v-a", fusion_weight=0.6, rerank_depth=10))  # the base MiniLM bi-encoder
    # what the soak's bad_model event deploys: the base MiniLM with an untrained cross-encoder head
    model_store.save(ModelSpec(version="v-ce", kind="cross_encoder", fusion_weight=1.0, rerank_depth=10))


def test_a_rolled_back_cross_encoder_leaves_no_reference_behind(tmp_path: Path) -> None:
    _versions()
    collection = Collection([load_beir(write_tiny_beir(tmp_path / "tiny", docs_per_topic=3), name="tiny")])
    svc = SearchService(collection, "v-a", api_token="")
    svc.set_models("v-ce")
    assert svc.released is not None and svc.released.versions == ["v-a"]
    assert encoder._CACHE == {}, "the bi-encoder v-a held is evicted once nothing serves it"
    in_flight = svc.routing.stable  # a request that started on the cross-encoder and is still running
    refs = [weakref.ref(in_flight), weakref.ref(in_flight.reranker), weakref.ref(in_flight.reranker.model)]
    assert [h.doc_id for h in in_flight.search(QUERIES[0], 3)]
    svc.set_models("v-a")
    assert svc.routing.stable.version == "v-a" and svc.released.versions == ["v-ce"]
    assert cross_encoder._MODELS == {}
    assert len(in_flight.search(QUERIES[1], 3)) == 3, "the running request finishes on the model it holds"
    assert cross_encoder._MODELS == {}, "...without loading it back into the process cache"
    release = svc.released
    del in_flight
    assert release.done.wait(60), "the release thread ended"
    assert release.collected is True and [r() for r in refs] == [None, None, None]
    assert release.trimmed is (sys.platform == "linux")
    assert svc.state()["released"]["versions"] == ["v-ce"] and svc.state()["released"]["done"] is True
    # what is served now holds what it needs, and the process cache holds exactly that
    assert svc.routing.stable.reranker.held() and all(
        any(obj is held for held in svc.routing.stable.reranker.held()) for obj in encoder._CACHE.values())
    assert len(svc.routing.stable.search(QUERIES[2], 3)) == 3


def test_a_canary_that_stays_keeps_its_models(tmp_path: Path) -> None:
    """Only what neither the stable nor the canary serves goes: promoting the canary keeps its loaded model."""
    _versions()
    collection = Collection([load_beir(write_tiny_beir(tmp_path / "tiny", docs_per_topic=3), name="tiny")])
    svc = SearchService(collection, "v-a", api_token="")
    svc.set_models("v-a", canary="v-ce", canary_weight=0.5)
    assert svc.released is None, "nothing stopped being served"
    model = svc.routing.canary.reranker.model if svc.routing.canary else None
    svc.set_models("v-ce")  # promote the canary
    assert svc.released is not None and svc.released.versions == ["v-a"]
    assert svc.routing.stable.reranker.model is model and list(cross_encoder._MODELS.values()) == [model]


def test_trim_heap_and_rss_read_this_process() -> None:
    rss = rss_bytes()
    assert rss is not None and rss > 10 << 20
    assert trim_heap() is (sys.platform == "linux")
    assert rss_bytes(2**22 + 12345) is None, "a pid that does not exist reads as unknown, not 0"


def _search(url: str, n: int) -> str:
    version = ""
    for i in range(n):
        r = httpx.get(f"{url}/search", params={"q": QUERIES[i % len(QUERIES)], "k": 10}, timeout=60)
        r.raise_for_status()
        version = r.json()["model_version"]
    return version


def _deploy(url: str, stable: str, canary: str | None = None) -> None:
    body = {"stable": stable, "canary": canary, "canary_weight": 0.5 if canary else 0.0}
    httpx.post(f"{url}/admin/models", json=body, timeout=300).raise_for_status()


def test_the_service_process_gives_a_rolled_back_cross_encoders_memory_back(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The real service process (python -m autooptimizer.infra.serve) on tiny data: RSS while the bi-encoder
    serves, after a cross-encoder canary is deployed beside it and served (the bi-encoder stays loaded, so the
    difference is the cross-encoder's share), and after the rollback to the bi-encoder alone. Measured on scifact
    (docs/benchmarks.md, Soak): without the release 699 -> 935 -> 935 MiB (all of the share kept), with it
    699 -> 970 -> 735 MiB (13 % of the share kept: code the first cross-encoder load imported)."""
    from autooptimizer.infra.stack import SubprocessService

    _versions()
    data = write_tiny_beir(tmp_path / "tiny", docs_per_topic=3)
    monkeypatch.setenv("AUTOOPT_THREADS", "1")
    port = free_port()
    svc = SubprocessService([sys.executable, "-m", "autooptimizer.infra.serve", "--port", str(port), "--datasets",
                             str(data), "--model", "v-a"], port, tmp_path / "search.log").start(timeout=300)
    try:
        assert svc.proc is not None
        pid = svc.proc.pid
        assert _search(svc.url, 40) == "v-a"
        before = rss_bytes(pid)
        _deploy(svc.url, "v-a", canary="v-ce")
        assert {_search(svc.url, 1) for _ in range(40)} == {"v-a", "v-ce"}
        loaded = rss_bytes(pid)
        _deploy(svc.url, "v-a")
        assert _search(svc.url, 40) == "v-a"
        released: dict[str, object] = {}
        for _ in range(600):  # the release thread ends once the old pipeline is collected
            released = httpx.get(f"{svc.url}/admin/state", timeout=30).json()["released"] or {}
            if released.get("done"):
                break
            time.sleep(0.1)
        after = rss_bytes(pid)
    finally:
        svc.stop()
    assert before is not None and loaded is not None and after is not None
    share = loaded - before
    print(f"RSS MiB before {before / 2**20:.0f}, cross-encoder served {loaded / 2**20:.0f}, "
          f"after rollback {after / 2**20:.0f}; release {released}")
    assert released.get("versions") == ["v-ce"] and released.get("collected") is True
    assert share > 30 << 20, "the cross-encoder's weights did take memory (else this test measures nothing)"
    assert after - before < share / 2, f"after the rollback RSS is {(after - before) / 2**20:.0f} MiB over before"
