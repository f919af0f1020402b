"""The FastAPI search service: validation, feedback NDCG in /metrics, canary split, swaps under load, faults."""

from __future__ import annotations

import re
import threading
import time

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from autooptimizer.search import metric_names as M
from autooptimizer.search import model_store
from autooptimizer.search.app import SearchService, create_app
from autooptimizer.search.beir import Collection, load_beir
from autooptimizer.search.model_store import ModelSpec
from autooptimizer.search.sample_data import write_tiny_beir


@pytest.fixture
def collection(tmp_path):
    return Collection([load_beir(write_tiny_beir(tmp_path / "tiny", docs_per_topic=3), name="tiny")])


@pytest.fixture
def service(collection):
    model_store.save(ModelSpec(version="v-a", fusion_weight=0.6, rerank_depth=10))
    model_store.save(ModelSpec(version="v-b", fusion_weight=0.3, rerank_depth=10))
    return SearchService(collection, "v-a", price_per_compute_second=0.5, budget=2.0, api_token="")


@pytest.fixture
def client(service):
    return TestClient(create_app(service))


def metric(text: str, name: str, **labels: str) -> float | None:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
        if m and (m.group(1) or "") == want:
            return float(m.group(2))
    return None


def test_search_returns_ranked_hits(client):
    r = client.get("/search", params={"q": "ocean acidification coral reef", "k": 3})
    assert r.status_code == 200
    body = r.json()
    assert body["model_version"] == "v-a" and len(body["hits"]) == 3 and body["latency_ms"] > 0
    assert all(h["doc_id"].startswith("tiny/ocean") for h in body["hits"])
    assert [h["score"] for h in body["hits"]] == sorted((h["score"] for h in body["hits"]), reverse=True)


@pytest.mark.parametrize("params,needle", [
    ({"q": ""}, "empty"), ({"q": "   "}, "empty"), ({"q": "x" * 10_000}, "10000 characters"),
    ({"q": "heart", "k": 0}, "k=0"), ({"q": "heart", "k": -3}, "k=-3"), ({"q": "heart", "k": 101}, "k=101"),
])
def test_bad_input_is_rejected_and_service_keeps_serving(client, params, needle):
    r = client.get("/search", params=params)
    assert r.status_code == 422
    assert needle in r.json()["detail"]["problem"] and r.json()["detail"]["fix"]
    assert client.get("/search", params={"q": "heart failure"}).status_code == 200


def test_feedback_records_ndcg_and_log(client, service):
    hit = client.get("/search", params={"q": "wing flutter supersonic flow", "k": 5}).json()
    judgments = {"tiny/wing0": 2, "tiny/wing1": 1, "tiny/heart0": 0}
    r = client.post("/feedback", json={"query": "wing flutter supersonic flow", "model_version": "v-a",
                                       "request_id": hit["request_id"], "judgments": judgments, "query_id": "q-wing"})
    assert r.status_code == 200, r.text
    ndcg = r.json()["ndcg10"]
    assert 0 < ndcg <= 1
    r2 = client.post("/feedback", json={"query": "x", "model_version": "v-a", "served": ["tiny/soil0"],
                                        "judgments": {"tiny/wing0": 1}})
    assert r2.json()["ndcg10"] == 0.0
    text = client.get("/metrics").text
    assert metric(text, M.FEEDBACK_NDCG + "_count", model_version="v-a") == 2.0
    assert metric(text, M.FEEDBACK_NDCG + "_sum", model_version="v-a") == pytest.approx(ndcg)
    import json

    rows = [json.loads(x) for x in service.feedback_log.read_text().splitlines()]
    assert rows[0]["query"] == "wing flutter supersonic flow" and rows[0]["judgments"] == judgments
    assert [s["doc_id"] for s in rows[0]["served"]] == [h["doc_id"] for h in hit["hits"]]
    assert [s["score"] for s in rows[0]["served"]] == [h["score"] for h in hit["hits"]], "kept exactly (float64)"
    assert rows[0]["model_version"] == "v-a" and rows[0]["ts"] > 0
    # with the request_id the record carries that request's server latency (the A/B judge's latency sample),
    # the same value /search answered; feedback naming only `served` has none
    assert rows[0]["request_id"] == hit["request_id"] and rows[0]["latency_ms"] == hit["latency_ms"] > 0
    assert rows[1]["request_id"] is None and rows[1]["latency_ms"] is None


def test_feedback_unknown_version_and_missing_ranking(client):
    r = client.post("/feedback", json={"query": "q", "model_version": "v-nope", "served": [], "judgments": {}})
    assert r.status_code == 404 and "v-nope" in r.json()["detail"]["problem"]
    r = client.post("/feedback", json={"query": "q", "model_version": "v-a", "judgments": {"a": 1}})
    assert r.status_code == 422 and "served" in r.json()["detail"]["fix"]


def test_metrics_exposition(client):
    client.get("/search", params={"q": "neurons memory"})
    text = client.get("/metrics").text
    assert metric(text, M.REQUESTS_TOTAL, model_version="v-a", status="ok") == 1.0
    assert metric(text, M.REQUEST_SECONDS + "_count", model_version="v-a") == 1.0
    assert metric(text, M.REQUEST_SECONDS + "_bucket", le="5.0", model_version="v-a") == 1.0
    assert metric(text, M.COST_BUDGET) == 2.0
    compute = metric(text, M.COMPUTE_SECONDS_TOTAL, model_version="v-a")
    assert compute > 0 and metric(text, M.COST_TOTAL, model_version="v-a") == pytest.approx(compute * 0.5)
    assert metric(text, M.MODEL_INFO, model_version="v-a", role="stable") == 1.0
    assert metric(text, M.REPLICAS) == 2.0


def test_canary_split_ratio(client, service):
    r = client.post("/admin/models", json={"stable": "v-a", "canary": "v-b", "canary_weight": 0.3})
    assert r.status_code == 200 and r.json()["canary"]["version"] == "v-b"
    routing = service.routing
    picks = [service.route(routing).version for _ in range(4000)]
    assert 0.27 < picks.count("v-b") / len(picks) < 0.33
    served = [client.get("/search", params={"q": "soil erosion"}).json()["model_version"] for _ in range(40)]
    assert set(served) == {"v-a", "v-b"}
    text = client.get("/metrics").text
    assert metric(text, M.CANARY_WEIGHT, model_version="v-b") == 0.3
    assert metric(text, M.MODEL_INFO, model_version="v-b", role="canary") == 1.0
    client.post("/admin/models", json={"stable": "v-b"})
    text = client.get("/metrics").text
    assert metric(text, M.MODEL_INFO, model_version="v-a", role="stable") is None
    assert metric(text, M.MODEL_INFO, model_version="v-b", role="stable") == 1.0
    assert client.post("/admin/models", json={"stable": "v-zzz"}).status_code == 404


def test_swap_under_load_never_fails_a_request(service):
    # a version with another truncation has its own encoder identity, so the swap really embeds the corpus
    model_store.save(ModelSpec(version="v-c", fusion_weight=0.5, rerank_depth=10, params={"max_seq_length": 64}))
    server = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    results: list[tuple[int, str]] = []
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(base_url=base, timeout=30) as c:
            while not stop.is_set():
                r = c.get("/search", params={"q": "heart failure blood pressure", "k": 3})
                results.append((r.status_code, r.json().get("model_version", "")))

    workers = [threading.Thread(target=hammer) for _ in range(3)]
    try:
        for w in workers:
            w.start()
        time.sleep(0.3)
        r = httpx.post(f"{base}/admin/models", json={"stable": "v-c"}, timeout=120)
        assert r.status_code == 200 and r.json()["stable"]["version"] == "v-c"
        time.sleep(0.3)
    finally:
        stop.set()
        for w in workers:
            w.join()
        server.should_exit = True
        thread.join(timeout=10)
    assert results and all(code == 200 for code, _ in results)
    versions = [v for _, v in results]
    assert versions[0] == "v-a" and versions[-1] == "v-c"
    assert versions.index("v-c") > versions.count("v-a") - 4  # no flapping back after the swap


def test_faults_errors_latency_cost_and_expiry(client):
    assert client.post("/admin/faults", json={"error_rate": 1.0, "duration_s": 0.5}).status_code == 200
    assert client.get("/search", params={"q": "heart"}).status_code == 500
    text = client.get("/metrics").text
    assert metric(text, M.ERRORS_TOTAL, model_version="v-a") == 1.0
    assert metric(text, M.REQUESTS_TOTAL, model_version="v-a", status="error") == 1.0
    time.sleep(0.6)
    assert client.get("/search", params={"q": "heart"}).status_code == 200  # expired

    client.post("/admin/faults", json={"latency_ms": 300, "duration_s": 30})
    assert client.get("/search", params={"q": "heart"}).json()["latency_ms"] >= 300
    assert client.delete("/admin/faults").json() == {"cleared": 1}

    before = metric(client.get("/metrics").text, M.COST_TOTAL, model_version="v-a")
    client.post("/admin/faults", json={"cost_multiplier": 1000, "duration_s": 30})
    client.get("/search", params={"q": "heart"})
    after = metric(client.get("/metrics").text, M.COST_TOTAL, model_version="v-a")
    assert after - before > 50 * before / 3  # one request now costs far more than the three before it

    for bad in ({"latency_ms": 20_000}, {"error_rate": 2}, {"duration_s": 3600}, {"cost_multiplier": 0.5},
                {"retries": {"operation": "rm -rf", "count": 1}}):
        assert client.post("/admin/faults", json=bad).status_code == 422


def test_retries_are_counted(client):
    client.post("/admin/faults", json={"retries": {"operation": "rerank", "count": 2}, "duration_s": 30})
    assert client.get("/search", params={"q": "heart"}).status_code == 200
    assert client.get("/search", params={"q": "brain"}).status_code == 200
    assert metric(client.get("/metrics").text, M.RETRIES_TOTAL, operation="rerank") == 4.0
    client.post("/admin/faults", json={"retries": {"operation": "bm25", "count": 9}, "duration_s": 30})
    r = client.get("/search", params={"q": "heart"})
    assert r.status_code == 503 and "bm25" in r.json()["detail"]["problem"]
    assert client.get("/healthz").status_code == 200


def test_admin_state_replicas_variant_and_token(collection):
    model_store.save(ModelSpec(version="v-a", fusion_weight=0.6, rerank_depth=10))
    svc = SearchService(collection, "v-a", api_token="s3cret")
    c = TestClient(create_app(svc))
    assert c.post("/admin/replicas", json={"replicas": 4}).status_code == 401
    auth = {"Authorization": "Bearer s3cret"}
    assert c.post("/admin/replicas", json={"replicas": 4}, headers=auth).json()["replicas"] == 4
    assert svc.limiter.total_tokens == 4
    assert c.post("/admin/variant", json={"rerank_depth": 5}, headers=auth).json()["rerank_depth_override"] == 5
    assert c.post("/admin/replicas", json={"replicas": 0}, headers=auth).status_code == 422
    state = c.get("/admin/state").json()
    assert state["stable"]["version"] == "v-a" and state["collection"] == {"datasets": ["tiny"], "docs": 18}
    assert metric(c.get("/metrics").text, M.REPLICAS) == 4.0


def test_rerank_retry_fault_applies_to_bm25_only_versions(collection):
    model_store.save(ModelSpec(version="v-bm25", kind="bm25", fusion_weight=0.0))
    c = TestClient(create_app(SearchService(collection, "v-bm25", api_token="")))
    c.post("/admin/faults", json={"retries": {"operation": "rerank", "count": 1}, "duration_s": 30})
    assert c.get("/search", params={"q": "heart"}).status_code == 200
    assert metric(c.get("/metrics").text, M.RETRIES_TOTAL, operation="rerank") == 1.0


# -- background start: BM25 alone until every vector exists ---------------------------------------------------------
@pytest.fixture
def gated_embedding(monkeypatch):
    """Embedding in shards of 4 documents that stops after the first shard until `release` is set; `seen` records,
    for every reranker score computed meanwhile, whether its version had all vectors in memory."""
    from autooptimizer.search import embeddings
    from autooptimizer.search.rerankers.bi_encoder import BiEncoderReranker

    monkeypatch.setattr(embeddings, "SHARD_SIZE", 4)
    release, first_written = threading.Event(), threading.Event()
    real_write, real_score = embeddings.EmbeddingStore.write, BiEncoderReranker.score
    seen: list[bool] = []

    def write(self, keys, vectors):
        path = real_write(self, keys, vectors)
        first_written.set()
        assert release.wait(60), "test never released the embedding"
        return path

    def score(self, query, doc_ids, bm25_scores):
        seen.append(self._matrix is not None and self._matrix.shape[0] == len(self.collection))
        return real_score(self, query, doc_ids, bm25_scores)

    monkeypatch.setattr(embeddings.EmbeddingStore, "write", write)
    monkeypatch.setattr(BiEncoderReranker, "score", score)
    return release, first_written, seen


def test_background_start_serves_bm25_until_every_vector_exists(collection, gated_embedding):
    from autooptimizer.search.embeddings import count_cached
    from autooptimizer.search.encoder import encoder_identity

    release, first_written, seen = gated_embedding
    model_store.save(ModelSpec(version="v-a", fusion_weight=0.6, rerank_depth=10))
    svc = SearchService(collection, "v-a", api_token="", background=True)
    client = TestClient(create_app(svc))
    assert first_written.wait(60)
    identity = encoder_identity(None)
    assert 0 < count_cached(collection, identity) < len(collection)  # part of the corpus is embedded, not all
    versions: list[str] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            versions.append(client.get("/search", params={"q": "coral reef ocean", "k": 3}).json()["model_version"])

    worker = threading.Thread(target=hammer)
    worker.start()
    time.sleep(0.5)
    body = client.get("/search", params={"q": "coral reef ocean", "k": 3}).json()
    bm25 = svc.routing.stable.bm25
    idx, scores = bm25.top("coral reef ocean", 3)
    assert body["model_version"] == "bm25-while-v-a"
    assert [h["doc_id"] for h in body["hits"]] == [collection.doc_ids[i] for i in idx]
    assert [h["score"] for h in body["hits"]] == pytest.approx(scores.tolist())
    warming = client.get("/admin/state").json()["warming"]
    assert warming["missing_vectors"] == len(collection) and not warming["done"]
    assert client.get("/healthz").json() == {"ok": True, "stable": "bm25-while-v-a", "warm": False}

    release.set()
    assert svc.warmed.wait(60)
    deadline = time.monotonic() + 60  # until the load thread has answers after the swap (a 0.3 s sleep raced)
    while versions.count("v-a") < 3 and time.monotonic() < deadline and worker.is_alive():
        time.sleep(0.05)
    stop.set()
    worker.join(30)
    assert count_cached(collection, identity) == len(collection)
    assert client.get("/search", params={"q": "coral reef ocean"}).json()["model_version"] == "v-a"
    state = client.get("/admin/state").json()
    assert state["stable"]["version"] == "v-a" and state["warming"]["swapped"] and state["warming"]["error"] is None
    switch = versions.index("v-a")  # one switch, never back, and v-a only ever scored with every vector present
    assert set(versions[:switch]) == {"bm25-while-v-a"} and set(versions[switch:]) == {"v-a"}
    assert seen and all(seen)


def test_background_embedding_failure_keeps_bm25_and_says_why(collection, gated_embedding, monkeypatch):
    from autooptimizer.search.encoder import Encoder

    release, first_written, seen = gated_embedding
    calls = {"n": 0}
    real_encode = Encoder.encode

    def encode(self, texts, batch_size=32):
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError("disk full")
        return real_encode(self, texts, batch_size)

    monkeypatch.setattr(Encoder, "encode", encode)
    model_store.save(ModelSpec(version="v-a", fusion_weight=0.6, rerank_depth=10))
    svc = SearchService(collection, "v-a", api_token="", background=True)
    release.set()
    assert svc.warmed.wait(60)
    client = TestClient(create_app(svc))
    assert client.get("/search", params={"q": "coral reef"}).json()["model_version"] == "bm25-while-v-a"
    warming = client.get("/admin/state").json()["warming"]
    assert warming["done"] and not warming["swapped"] and "disk full" in warming["error"]
    assert not seen  # v-a never scored a request


def test_models_chosen_during_background_start_win(collection, gated_embedding):
    release, first_written, _ = gated_embedding
    model_store.save(ModelSpec(version="v-a", fusion_weight=0.6, rerank_depth=10))
    model_store.save(ModelSpec(version="v-b", fusion_weight=0.3, rerank_depth=10))
    svc = SearchService(collection, "v-a", api_token="", background=True)
    assert first_written.wait(60)
    chooser = threading.Thread(target=svc.set_models, args=("v-b",))
    chooser.start()  # blocks on the same corpus embedding, then swaps; the stale background result must not
    release.set()
    chooser.join(60)
    assert svc.warmed.wait(60)
    assert svc.routing.stable.version == "v-b"
    assert svc.warming is not None and not svc.warming.swapped and svc.warming.error is None


def test_background_start_with_every_vector_cached_serves_the_version_at_once(collection):
    model_store.save(ModelSpec(version="v-a", fusion_weight=0.6, rerank_depth=10))
    SearchService(collection, "v-a", api_token="")  # embeds synchronously, fills the cache
    svc = SearchService(collection, "v-a", api_token="", background=True)
    assert svc.warmed.is_set() and svc.warming is None and svc.routing.stable.version == "v-a"


def test_a_request_queued_for_a_replica_runs_on_the_version_served_when_it_starts(service, monkeypatch):
    """One replica, busy; a second request waits for it; the stable version is swapped meanwhile. The waiting request
    runs on the new version, not on the one served when it arrived (after a rollback the queue must not run on the
    bad model: the month soak lost 359 requests that way)."""
    service.set_replicas(1)
    started, go, ran = threading.Event(), threading.Event(), []
    original = service.search_sync

    def first_blocks(pipe, q, k, retries):  # noqa: ANN001, ANN202 - the real search, held at the start of the first
        ran.append(pipe.version)
        if len(ran) == 1:
            started.set()
            go.wait(30)
        return original(pipe, q, k, retries)

    monkeypatch.setattr(service, "search_sync", first_blocks)
    server = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    base = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    answers: dict[str, str] = {}

    def ask(name: str) -> None:
        answers[name] = httpx.get(f"{base}/search", params={"q": "heart failure", "k": 3}, timeout=60).json()[
            "model_version"]

    a, b = threading.Thread(target=ask, args=("a",)), threading.Thread(target=ask, args=("b",))
    try:
        a.start()
        assert started.wait(30)
        b.start()
        deadline = time.monotonic() + 30
        while service.limiter.statistics().tasks_waiting < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert service.limiter.statistics().tasks_waiting == 1, "b waits for the busy replica"
        assert httpx.post(f"{base}/admin/models", json={"stable": "v-b"}, timeout=120).status_code == 200
        go.set()
        a.join(60)
        b.join(60)
    finally:
        go.set()
        server.should_exit = True
        thread.join(timeout=10)
    assert answers == {"a": "v-a", "b": "v-b"}, "a ran before the swap; b, queued across it, runs on the new stable"
    assert ran == ["v-a", "v-b"]


def test_answers_kept_for_feedback_are_compact_and_bounded(service, monkeypatch):
    """The service keeps its last SERVED_CACHE answers for their feedback; as pydantic Hits 10,000 of them took
    52 MiB (the month soak's search service grew by that after its restart), in the compact form ~5 MiB."""
    import tracemalloc

    from autooptimizer.search import app as app_module
    from autooptimizer.search.pipeline import Hit

    hits = [Hit(doc_id=f"tiny/doc{i}", score=1.0 / (i + 1)) for i in range(10)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(2000):
            service.remember(f"r{i:05d}", "v-a", [Hit(doc_id=h.doc_id, score=h.score) for h in hits], 1.0)
        per_answer = (tracemalloc.get_traced_memory()[0] - before) / 2000
    finally:
        tracemalloc.stop()
    assert per_answer < 1024, f"{per_answer:.0f} bytes per kept answer (as Hits: ~5,500)"
    kept = service.served("r00007")
    assert kept is not None and kept.doc_ids == tuple(h.doc_id for h in hits) and list(kept.scores) == [
        h.score for h in hits]
    monkeypatch.setattr(app_module, "SERVED_CACHE", 100)
    service.remember("last", "v-a", hits)
    assert service.served("r00007") is None and service.served("last") is not None, "the oldest go first"


def test_a_request_no_replica_took_is_answered_and_counted_without_an_empty_version(client, monkeypatch):
    """The worker thread never started (RuntimeError: can't start new thread, as under memory pressure): the
    request was never routed, so its 503 must not name model "" and its failure is counted on the stable version."""
    import anyio

    async def no_thread(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202 - anyio.to_thread.run_sync's signature
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(anyio.to_thread, "run_sync", no_thread)
    r = client.get("/search", params={"q": "heart"})
    assert r.status_code == 503
    problem = r.json()["detail"]["problem"]
    assert "model :" not in problem and "before a replica took it" in problem and "can't start new thread" in problem
    text = client.get("/metrics").text
    assert metric(text, M.REQUESTS_TOTAL, model_version="v-a", status="error") == 1.0
    assert 'model_version=""' not in text
