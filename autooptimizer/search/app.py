"""The search service under optimization (FastAPI): /search, /feedback, /metrics and the admin endpoints.

It serves a stable and an optional canary version over one collection. A model change loads and warms the new
pipelines first (embedding the corpus if needed) and then swaps one reference, so in-flight and new requests never
see a half-built model; the memory of what the swap left unserved is then given back (search/release.py). Bad input
answers 4xx with {"detail": {"problem", "fix"}} and the service keeps serving.

With `background=True`, a start whose versions still lack document vectors does not wait for them: it serves BM25
alone, labelled `bm25-while-<version>` (never the version itself), embeds in a thread, and swaps to the real
routing only once every vector exists; a failed or superseded embed never swaps (`warming` in /admin/state).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import random
import threading
import time
import uuid
from array import array
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from autooptimizer.errors import AutoOptError, InputError, NotFoundError
from autooptimizer.search import model_store, stages
from autooptimizer.search.beir import Collection
from autooptimizer.search.faults import FaultBook, FaultRequest
from autooptimizer.search.metrics_eval import ndcg10_ranking
from autooptimizer.search.model_store import ModelSpec
from autooptimizer.search.pipeline import Hit, SearchPipeline
from autooptimizer.search.release import Release, release
from autooptimizer.search.retry import retry
from autooptimizer.search.service_metrics import ServiceMetrics

MAX_QUERY_CHARS = 1000
MAX_K = 100
RETRY_ATTEMPTS = 4
SERVED_CACHE = 10_000  # answers kept for their feedback: ~5 MiB in the compact form of `Served` (52 MiB as Hits)


@dataclass(frozen=True)
class Routing:
    """What serves traffic; replaced as a whole on every model change."""

    stable: SearchPipeline
    canary: SearchPipeline | None = None
    canary_weight: float = 0.0


@dataclass(frozen=True)
class Served:
    """What /search answered for one request_id, kept for its feedback (the A/B judge's per-request samples).

    Compact on purpose: the service keeps the last SERVED_CACHE of them; as pydantic `Hit`s they took 52 MiB
    (tracemalloc, 10 hits each), which the month soak's search service grew by again after its restart; a tuple of
    doc ids and a float64 array take 5 MiB."""

    version: str
    doc_ids: tuple[str, ...]
    scores: array[float]  # typecode "d", aligned with doc_ids
    latency_ms: float | None = None  # server time of the request, as in the response and the Prometheus histogram

    @classmethod
    def of(cls, version: str, hits: list[Hit], latency_ms: float | None = None) -> Served:
        return cls(version, tuple(h.doc_id for h in hits), array("d", (h.score for h in hits)), latency_ms)


@dataclass
class Warming:
    """A background start: what will serve once embedded, and how it went (shown in /admin/state)."""

    stable: str
    canary: str | None
    missing_vectors: int
    started: float
    finished: float | None = None
    error: str | None = None
    swapped: bool = False

    def view(self) -> dict[str, Any]:
        end = self.finished or time.time()
        return {"stable": self.stable, "canary": self.canary, "missing_vectors": self.missing_vectors,
                "seconds": round(end - self.started, 1), "done": self.finished is not None,
                "swapped": self.swapped, "error": self.error}


def missing_vectors(pipe: SearchPipeline) -> int:
    """Documents of the pipeline's collection without a cached vector for its reranker (0 for rerankers that
    keep none, and for those that do not say: those warm before serving, as always)."""
    if pipe.spec.fusion_weight <= 0:
        return 0
    count: Callable[[], int] | None = getattr(pipe.reranker, "missing_vectors", None)
    return int(count()) if count is not None else 0


def bm25_standin(spec: ModelSpec) -> ModelSpec:
    """What serves while `spec` embeds: BM25 alone at its depth, under a name that says so."""
    return ModelSpec(version=f"bm25-while-{spec.version}"[:100], kind="bm25", fusion_weight=0.0,
                     rerank_depth=spec.rerank_depth, notes=f"BM25 alone while {spec.version} embeds its corpus")


class SearchResponse(BaseModel):
    hits: list[Hit]
    model_version: str
    latency_ms: float
    request_id: str


class FeedbackIn(BaseModel):
    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    model_version: str = Field(min_length=1, max_length=100)
    judgments: dict[str, int] = Field(description="doc_id -> relevance grade (collection ids, '<dataset>/<docid>')")
    served: list[str] | None = Field(default=None, max_length=MAX_K,
                                     description="the ranking that was served, best first")
    request_id: str | None = Field(default=None, description="the /search request_id; fills `served` and scores")
    query_id: str | None = None
    dataset: str | None = None


class ModelsIn(BaseModel):
    stable: str
    canary: str | None = None
    canary_weight: float = Field(default=0.0, ge=0.0, le=1.0)


class ReplicasIn(BaseModel):
    replicas: int = Field(ge=1, le=64)


class VariantIn(BaseModel):
    rerank_depth: int | None = Field(default=None, ge=1, le=1000, description="None restores each version's own depth")


def _problem(status: int, problem: str, fix: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": {"problem": problem, "fix": fix}})


class SearchService:
    """State behind the app; usable directly in tests and by the CLI."""

    def __init__(
        self,
        collection: Collection,
        stable: ModelSpec | str,
        canary: ModelSpec | str | None = None,
        canary_weight: float = 0.0,
        replicas: int = 2,
        seed: int = 0,
        price_per_compute_second: float | None = None,
        budget: float | None = None,
        api_token: str | None = None,
        feedback_log: Path | None = None,
        progress: bool = False,
        background: bool = False,
    ) -> None:
        from autooptimizer.profiles import load_profile
        from autooptimizer.settings import get_settings

        settings = get_settings()
        cost = load_profile(settings.env).cost
        self.collection = collection
        self.progress = progress
        self.api_token = api_token if api_token is not None else settings.api_token
        self.metrics = ServiceMetrics(
            cost.price_per_compute_second if price_per_compute_second is None else price_per_compute_second,
            cost.budget if budget is None else budget,
        )
        self.feedback_log = feedback_log or settings.feedback_log
        self.faults = FaultBook()
        self.rerank_depth: int | None = None
        self.replicas = replicas
        self.limiter = anyio.CapacityLimiter(replicas)
        self.metrics.replicas.set(replicas)
        self._route_rng = random.Random(seed)
        self._fault_rng = random.Random(seed + 1)
        self._rng_lock = threading.Lock()
        self._log_lock = threading.Lock()
        self._served: OrderedDict[str, Served] = OrderedDict()
        self._served_lock = threading.Lock()
        self._seen_versions: set[str] = set()
        self._swap_lock = threading.Lock()
        self._generation = 0  # +1 on every set_models: a background swap prepared before it is stale
        self.warming: Warming | None = None
        self.released: Release | None = None  # the last swap's release of what stopped being served
        self.warmed = threading.Event()
        if not 0.0 <= canary_weight <= 1.0:
            raise InputError(f"canary_weight {canary_weight} is outside [0, 1].", "Pass a share between 0 and 1.")
        target = (self._spec(stable), self._spec(canary) if canary is not None else None, canary_weight)
        pending = self._pending(target[0], target[1]) if background else 0
        if pending:
            self.routing = Routing(stable=SearchPipeline(bm25_standin(target[0]), collection))
            self.warming = Warming(target[0].version, target[1].version if target[1] else None, pending, time.time())
        else:
            self.routing = self._build_routing(*target)
            self.warmed.set()
        self._publish()
        if pending:
            threading.Thread(target=self._warm_then_swap, args=(*target, 0), name="warm-models", daemon=True).start()

    # -- models -------------------------------------------------------------------------------------------------
    def _spec(self, v: ModelSpec | str) -> ModelSpec:
        return v if isinstance(v, ModelSpec) else model_store.load(v)

    def _pipeline(self, spec: ModelSpec) -> SearchPipeline:
        current = getattr(self, "routing", None)
        for p in (current.stable, current.canary) if current else ():
            if p is not None and p.spec == spec:
                return p
        return SearchPipeline(spec, self.collection).warm(progress=self.progress)

    def _build_routing(self, stable: ModelSpec | str, canary: ModelSpec | str | None, weight: float) -> Routing:
        s = self._pipeline(self._spec(stable))
        c = self._pipeline(self._spec(canary)) if canary is not None else None
        if c is not None and c.version == s.version:
            raise InputError(f"Canary and stable are both {s.version!r}.", "Pick a different canary or none.")
        return Routing(stable=s, canary=c, canary_weight=weight if c is not None else 0.0)

    def _pending(self, stable: ModelSpec, canary: ModelSpec | None) -> int:
        """Vectors the target versions still need over this collection (0: they can warm synchronously)."""
        return sum(missing_vectors(SearchPipeline(s, self.collection)) for s in (stable, canary) if s is not None)

    def _warm_then_swap(self, stable: ModelSpec, canary: ModelSpec | None, weight: float, generation: int) -> None:
        """The background start: build and warm the target routing, check that no vector is missing, swap."""
        warming = self.warming
        assert warming is not None
        try:
            routing = self._build_routing(stable, canary, weight)
            left = sum(missing_vectors(p) for p in (routing.stable, routing.canary) if p is not None)
            if left:
                raise RuntimeError(f"{left} document vectors still missing after warm-up")
            with self._swap_lock:
                if self._generation == generation:  # nobody chose other models meanwhile
                    self._swap(routing)
                    warming.swapped = True
        except Exception as exc:  # keep serving BM25; the state says why the versions never came up
            warming.error = f"{type(exc).__name__}: {exc}"
        finally:
            warming.finished = time.time()
            self.warmed.set()

    def _swap(self, routing: Routing) -> None:
        for pipe in (routing.stable, routing.canary):
            if pipe is not None:  # its series exist at 0 before the first request can reach it
                self.metrics.init_version(pipe.version)
        old, self.routing = self.routing, routing
        self._publish()
        self._release(old, routing)

    def _release(self, old: Routing, new: Routing) -> None:
        """Give back the memory of every pipeline the new routing no longer serves (neither stable nor canary):
        its cached models go now, the heap once the requests still running on it end (search/release.py)."""
        keep = [p for p in (new.stable, new.canary) if p is not None]
        gone = [p for p in (old.stable, old.canary) if p is not None and all(p is not k for k in keep)]
        if gone:
            self.released = release(gone, keep)

    def set_models(self, stable: str, canary: str | None = None, canary_weight: float = 0.0) -> Routing:
        """Load and warm first, then swap atomically (requests already running finish on the old routing)."""
        with self._swap_lock:
            routing = self._build_routing(stable, canary, canary_weight)
            self._generation += 1
            self._swap(routing)
            return routing

    def _publish(self) -> None:
        r = self.routing
        self._seen_versions.update({r.stable.version} | ({r.canary.version} if r.canary else set()))
        self.metrics.set_models(r.stable.version, r.canary.version if r.canary else None, r.canary_weight)

    def route(self, routing: Routing) -> SearchPipeline:
        if routing.canary is None or routing.canary_weight <= 0:
            return routing.stable
        with self._rng_lock:
            draw = self._route_rng.random()
        return routing.canary if draw < routing.canary_weight else routing.stable

    def set_replicas(self, n: int) -> None:
        self.limiter.total_tokens = n
        self.replicas = n
        self.metrics.replicas.set(n)

    def known_version(self, version: str) -> bool:
        if version in self._seen_versions:
            return True
        try:
            return model_store.exists(version)
        except InputError:
            return False

    # -- serving ------------------------------------------------------------------------------------------------
    def validate_query(self, q: str, k: int) -> str:
        q = (q or "").strip()
        if not q:
            raise InputError("The query `q` is empty.", "Pass a non-empty query, e.g. /search?q=aspirin+stroke.")
        if len(q) > MAX_QUERY_CHARS:
            raise InputError(f"The query is {len(q)} characters; the limit is {MAX_QUERY_CHARS}.",
                             "Shorten the query.")
        if not 1 <= k <= MAX_K:
            raise InputError(f"k={k} is out of range.", f"Pass 1 <= k <= {MAX_K}.")
        return q

    def search_sync(self, pipe: SearchPipeline, q: str, k: int, retries: dict[str, int]) -> list[Hit]:
        def call(operation, fn):
            return retry(operation, fn, attempts=RETRY_ATTEMPTS, injected_failures=retries.get(operation, 0),
                         on_retry=lambda op, n, exc: self.metrics.retries.labels(op).inc())

        return pipe.search(q, k, rerank_depth=self.rerank_depth, call=call)

    def remember(self, request_id: str, version: str, hits: list[Hit], latency_ms: float | None = None) -> None:
        with self._served_lock:
            self._served[request_id] = Served.of(version, hits, latency_ms)
            while len(self._served) > SERVED_CACHE:
                self._served.popitem(last=False)

    def served(self, request_id: str) -> Served | None:
        with self._served_lock:
            return self._served.get(request_id)

    def feedback(self, fb: FeedbackIn) -> dict[str, Any]:
        if not self.known_version(fb.model_version):
            raise NotFoundError(f"Unknown model_version {fb.model_version!r}.",
                                "Send the model_version that /search returned with the results.")
        scores: dict[str, float] = {}
        served = fb.served
        cached = self.served(fb.request_id) if fb.request_id else None
        if cached is not None:
            if cached.version != fb.model_version:
                raise InputError(f"request {fb.request_id} was served by {cached.version}, not {fb.model_version}.",
                                 "Send the model_version returned with that request.")
            scores = dict(zip(cached.doc_ids, cached.scores, strict=True))
            served = served or list(cached.doc_ids)
        if served is None:
            raise InputError("Feedback has no served ranking.", "Send `served` (doc ids, best first) or `request_id`.")
        ndcg = ndcg10_ranking(served, fb.judgments)
        if ndcg is not None:
            self.metrics.ndcg.labels(fb.model_version).observe(ndcg)
        record = {
            "ts": time.time(),
            "query_id": fb.query_id,
            "dataset": fb.dataset,
            "query": fb.query,
            "model_version": fb.model_version,
            "request_id": fb.request_id,
            "served": [{"doc_id": d, "score": scores.get(d)} for d in served],
            "judgments": fb.judgments,
            "ndcg10": ndcg,
            "latency_ms": cached.latency_ms if cached is not None else None,
        }
        with self._log_lock, self.feedback_log.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        return {"ndcg10": ndcg, "recorded": ndcg is not None, "model_version": fb.model_version}

    def state(self) -> dict[str, Any]:
        r = self.routing
        return {
            "stable": r.stable.spec.model_dump(),
            "canary": r.canary.spec.model_dump() if r.canary else None,
            "canary_weight": r.canary_weight,
            "replicas": self.replicas,
            "rerank_depth_override": self.rerank_depth,
            "faults": [f.model_dump() for f in self.faults.list()],
            "active_faults": self.faults.active().model_dump(),
            "collection": {"datasets": list(self.collection.datasets), "docs": len(self.collection)},
            "price_per_compute_second": self.metrics.price,
            "warming": self.warming.view() if self.warming else None,
            "released": self.released.view() if self.released else None,
        }


def create_app(service: SearchService) -> FastAPI:
    """The FastAPI app over a built SearchService (models are loaded and warm before the app exists)."""
    app = FastAPI(title="AutoOptimizer search service", version="1")
    app.state.service = service
    svc = service

    @app.exception_handler(AutoOptError)
    async def _autoopt_error(request: Request, exc: AutoOptError) -> JSONResponse:
        status = 404 if isinstance(exc, NotFoundError) else 422 if isinstance(exc, InputError) else 400
        return _problem(status, exc.problem, exc.fix)

    def require_token(authorization: str | None = Header(default=None)) -> None:
        if not svc.api_token:
            return
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), svc.api_token.encode()):
            raise HTTPException(401, {"problem": "Missing or wrong bearer token.",
                                      "fix": "Send `Authorization: Bearer $AUTOOPT_API_TOKEN`."})

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"ok": True, "stable": svc.routing.stable.version, "warm": svc.warmed.is_set()}

    @app.get("/search", response_model=SearchResponse)
    async def search(q: str = "", k: int = 10) -> Any:
        q = svc.validate_query(q, k)
        version = ""  # routed below: by the injected error, or when a replica takes the request
        faults = svc.faults.active()
        start = time.perf_counter()
        compute = 0.0
        ok = False
        try:
            if faults.latency_ms:
                await asyncio.sleep(faults.latency_ms / 1000)
            with svc._rng_lock:
                inject_error = faults.error_rate > 0 and svc._fault_rng.random() < faults.error_rate
            if inject_error:
                version = svc.route(svc.routing).version
                return _problem(500, "Injected error (fault injection is active).", "Wait for the fault to expire.")

            def work() -> tuple[list[Hit], float, dict[str, float]]:
                # routed when a replica takes the request, not when it arrived: after a rollback the queue runs on
                # the version now served, not on the bad model it was waiting for (the month soak's service
                # answered nothing for 60 s after a cross-encoder's rollback while its queue still ran on it)
                nonlocal version
                pipe = svc.route(svc.routing)
                version = pipe.version
                t0 = time.perf_counter()
                stages.begin()
                try:
                    out = svc.search_sync(pipe, q, k, faults.retries)
                finally:
                    spent = stages.end()
                return out, time.perf_counter() - t0, spent

            try:
                hits, compute, spent = await anyio.to_thread.run_sync(work, limiter=svc.limiter)
            except Exception as exc:  # the service keeps serving; the error is counted
                where = f"in model {version}" if version else "before a replica took it"  # no thread, no route
                return _problem(503, f"Search failed {where}: {exc}", "Retry later.")
            ok = True
        finally:
            elapsed = time.perf_counter() - start
            version = version or svc.routing.stable.version  # cancelled before a replica took it
            svc.metrics.observe_request(version, elapsed, ok, compute * faults.cost_multiplier)
        request_id = uuid.uuid4().hex
        latency_ms = round(elapsed * 1000, 3)
        svc.remember(request_id, version, hits, latency_ms)
        t0 = time.perf_counter()  # one pydantic-core dump, not FastAPI's validate-then-encode of a response_model
        body = SearchResponse(hits=hits, model_version=version, latency_ms=latency_ms,
                              request_id=request_id).model_dump_json()
        spent["serialise"] = time.perf_counter() - t0
        svc.metrics.observe_stages(spent)
        return Response(content=body, media_type="application/json")

    @app.post("/feedback")
    async def feedback(fb: FeedbackIn) -> dict[str, Any]:
        return await anyio.to_thread.run_sync(svc.feedback, fb)

    @app.get("/metrics")
    async def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/admin/state")
    async def admin_state() -> dict[str, Any]:
        return svc.state()

    @app.post("/admin/models", dependencies=[Depends(require_token)])
    async def admin_models(body: ModelsIn) -> dict[str, Any]:
        await anyio.to_thread.run_sync(svc.set_models, body.stable, body.canary, body.canary_weight)
        return svc.state()

    @app.post("/admin/replicas", dependencies=[Depends(require_token)])
    async def admin_replicas(body: ReplicasIn) -> dict[str, Any]:
        svc.set_replicas(body.replicas)
        return svc.state()

    @app.post("/admin/variant", dependencies=[Depends(require_token)])
    async def admin_variant(body: VariantIn) -> dict[str, Any]:
        svc.rerank_depth = body.rerank_depth
        return svc.state()

    @app.post("/admin/faults", dependencies=[Depends(require_token)])
    async def admin_faults(body: FaultRequest) -> dict[str, Any]:
        return svc.faults.add(body).model_dump()

    @app.delete("/admin/faults", dependencies=[Depends(require_token)])
    async def admin_clear_faults() -> dict[str, Any]:
        return {"cleared": svc.faults.clear()}

    return app
