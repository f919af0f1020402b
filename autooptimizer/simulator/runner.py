"""The traffic simulator: replays judged queries at a fixed rate against /search and posts their qrels as feedback.

Open loop: a dispatcher thread ticks at `rate` and hands each request to a small pool, so a slow service does not
slow the offered load (a tick is dropped, and counted, when `concurrency` requests are already in flight).
Only loopback targets are accepted. Faults go through the service's admin API (`POST /admin/faults`).
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from autooptimizer.infra.net import require_loopback
from autooptimizer.search.metrics_eval import ndcg10_ranking
from autooptimizer.simulator.scenario import FaultSpec, Scenario
from autooptimizer.simulator.workload import JudgedQuery, Workload, load_workload


class SimStats(BaseModel):
    sent: int = 0
    ok: int = 0
    errors: int = 0
    dropped: int = 0
    feedback_ok: int = 0
    feedback_errors: int = 0
    by_dataset: dict[str, int] = Field(default_factory=dict)
    ndcg_by_dataset: dict[str, float] = Field(default_factory=dict, description="mean NDCG@10 of what was served")
    active: list[str] = Field(default_factory=list, description="datasets the query mix draws from now")
    p50_ms: float | None = None
    p95_ms: float | None = None
    elapsed_s: float = 0.0
    faults: list[dict[str, Any]] = Field(default_factory=list)
    last_error: str | None = None


class RequestResult(BaseModel):
    """One /search request as the client saw it (the soak's measurements are built from these)."""

    t: float = Field(description="time.monotonic() when the answer (or the failure) came back")
    sent: float | None = Field(default=None, description="time.monotonic() when the request was sent")
    dataset: str
    ok: bool
    latency_ms: float | None = None
    ndcg: float | None = Field(default=None, description="NDCG@10 of what was served; None when it failed")
    model_version: str | None = None
    error: str | None = None


def mix_slots(weights: dict[str, float], slots: int = 20) -> list[str]:
    """A weighted query mix as the round-robin list the dispatcher draws from: `slots` entries shared by largest
    remainder (weights need not sum to 1; a dataset with weight > 0 gets at least one slot)."""
    total = sum(w for w in weights.values() if w > 0)
    if total <= 0:
        from autooptimizer.errors import InputError

        raise InputError(f"The query mix {weights} has no positive weight.", "Give at least one dataset a weight > 0.")
    share = {d: slots * w / total for d, w in weights.items() if w > 0}
    count = {d: max(1, int(v)) for d, v in share.items()}
    for d in sorted(share, key=lambda d: share[d] - int(share[d]), reverse=True):
        if sum(count.values()) >= slots:
            break
        count[d] += 1
    out: list[str] = []
    while any(count.values()):  # interleave, so a short window still sees the mix
        for d in list(count):
            if count[d]:
                out.append(d)
                count[d] -= 1
    return out


def ndcg_at_10(served: list[str], judgments: dict[str, int]) -> float:
    """NDCG@10 of what was served, exactly as the service scores the feedback (`search.metrics_eval`, the project's
    one definition); 0 when nothing is judged relevant."""
    value = ndcg10_ranking(served, judgments)
    return 0.0 if value is None else value


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def _name(dataset: str | Path) -> str:
    """Datasets are keyed by folder name, whether given by name under AUTOOPT_DATA_DIR or by path."""
    return Path(dataset).name


def _headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _admin_token(token: str | None) -> str | None:
    if token is not None:
        return token
    from autooptimizer.settings import get_settings

    return get_settings().api_token


def inject_fault(target_url: str, fault: FaultSpec, token: str | None = None) -> dict[str, Any]:
    """POST the fault to the service; returns the service's answer (raises on HTTP errors)."""
    import httpx

    url = require_loopback(target_url)
    r = httpx.post(f"{url}/admin/faults", json=fault.payload(), headers=_headers(_admin_token(token)), timeout=10)
    r.raise_for_status()
    return r.json()


def clear_faults(target_url: str, token: str | None = None) -> dict[str, Any]:
    """Cancel every active fault now (the service also expires them on its own)."""
    import httpx

    url = require_loopback(target_url)
    r = httpx.delete(f"{url}/admin/faults", headers=_headers(_admin_token(token)), timeout=10)
    r.raise_for_status()
    return r.json()


class Simulator:
    """One bounded run. `run()` blocks; `start()` runs it in a thread; `shift()` moves the mix live."""

    def __init__(
        self,
        scenario: Scenario,
        target_url: str,
        *,
        token: str | None = None,
        workload: Workload | None = None,
        request_timeout: float = 15.0,
        on_result: Callable[[RequestResult], None] | None = None,
    ) -> None:
        self.scenario = scenario
        self.url = require_loopback(target_url)
        self.token = token
        self.workload = workload or load_workload(
            scenario.all_datasets(), split=scenario.split, max_queries=scenario.max_queries, seed=scenario.seed
        )
        missing = [d for d in map(_name, scenario.all_datasets()) if d not in self.workload.queries]
        if missing:
            from autooptimizer.errors import InputError

            raise InputError(f"The workload has no queries for {missing}.", "Load those datasets into the workload.")
        self.request_timeout = request_timeout
        self.on_result = on_result
        self.stats = SimStats(active=[_name(d) for d in scenario.datasets])
        self._latencies: list[float] = []
        self._ndcg: dict[str, list[float]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rr = 0

    # ---- control -----------------------------------------------------------------------------------------------
    def shift(self, dataset: str) -> None:
        """Move the whole query mix to `dataset` (a name, or the path it was loaded from) now: a corpus shift."""
        dataset = _name(dataset)
        if dataset not in self.workload.queries:
            from autooptimizer.errors import InputError

            raise InputError(f"Dataset {dataset!r} is not in this simulator's workload.", "Add it to the scenario.")
        with self._lock:
            self.stats.active = [dataset]

    def set_mix(self, weights: dict[str, float]) -> None:
        """Move the query mix to several datasets at once, in proportion to `weights` (`mix_slots`)."""
        names = {_name(d): w for d, w in weights.items()}
        missing = [d for d in names if d not in self.workload.queries]
        if missing:
            from autooptimizer.errors import InputError

            raise InputError(f"Datasets {missing} are not in this simulator's workload.", "Add them to the scenario.")
        slots = mix_slots(names)
        with self._lock:
            self.stats.active = slots

    def _report(self, result: RequestResult) -> None:
        if self.on_result is not None:
            with contextlib.suppress(Exception):  # a measuring hook must never stop the traffic
                self.on_result(result)

    def stop(self) -> None:
        self._stop.set()

    def start(self, on_tick: Callable[[SimStats], None] | None = None) -> Simulator:
        self._thread = threading.Thread(target=self.run, kwargs={"on_tick": on_tick}, name="simulator", daemon=True)
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> SimStats:
        if self._thread is not None:
            self._thread.join(timeout)
        return self.snapshot()

    def snapshot(self) -> SimStats:
        with self._lock:
            s = self.stats.model_copy(deep=True)
            s.p50_ms = _percentile(self._latencies, 0.50)
            s.p95_ms = _percentile(self._latencies, 0.95)
            s.ndcg_by_dataset = {d: sum(v) / len(v) for d, v in self._ndcg.items() if v}
        return s

    def latencies_ms(self) -> list[float]:
        with self._lock:
            return list(self._latencies)

    # ---- the run -----------------------------------------------------------------------------------------------
    def _pick(self) -> JudgedQuery:
        with self._lock:
            active = self.stats.active
            ds = active[self._rr % len(active)]
            self._rr += 1
        return self.workload.next(ds)

    def _one(self, client: Any, q: JudgedQuery) -> None:
        t, sent = time.perf_counter(), time.monotonic()
        try:
            r = client.get(f"{self.url}/search", params={"q": q.text, "k": self.scenario.k})
            ms = (time.perf_counter() - t) * 1000
            if r.status_code != 200:
                err = f"/search HTTP {r.status_code}: {r.text[:200]}"
                with self._lock:
                    self.stats.errors += 1
                    self._latencies.append(ms)
                    self.stats.last_error = err
                self._report(RequestResult(t=time.monotonic(), sent=sent, dataset=q.dataset, ok=False, latency_ms=ms,
                                           error=err))
                return
            body = r.json()
        except Exception as exc:
            err = f"/search {type(exc).__name__}: {exc}"
            with self._lock:
                self.stats.errors += 1
                self.stats.last_error = err
            self._report(RequestResult(t=time.monotonic(), sent=sent, dataset=q.dataset, ok=False, error=err))
            return
        served = [h["doc_id"] for h in body.get("hits", [])]
        ndcg = ndcg_at_10(served, q.judgments)
        with self._lock:
            self.stats.ok += 1
            self._latencies.append(ms)
            self._ndcg.setdefault(q.dataset, []).append(ndcg)
        self._report(RequestResult(t=time.monotonic(), sent=sent, dataset=q.dataset, ok=True, latency_ms=ms, ndcg=ndcg,
                                   model_version=body.get("model_version")))
        if not self.scenario.feedback:
            return
        payload = {
            "query_id": f"{q.dataset}/{q.query_id}",
            "query": q.text,
            "model_version": body.get("model_version"),
            "judgments": q.judgments,
            "served": served,
            # the service then logs this request's server latency with the feedback (the A/B latency samples)
            "request_id": body.get("request_id"),
        }
        try:
            fr = client.post(f"{self.url}/feedback", json=payload)
            good = fr.status_code == 200
            err = None if good else f"/feedback HTTP {fr.status_code}: {fr.text[:200]}"
        except Exception as exc:
            good, err = False, f"/feedback {type(exc).__name__}: {exc}"
        with self._lock:
            if good:
                self.stats.feedback_ok += 1
            else:
                self.stats.feedback_errors += 1
                self.stats.last_error = err

    def run(self, on_tick: Callable[[SimStats], None] | None = None) -> SimStats:
        """Send traffic until `duration` passes, `max_requests` are sent, or `stop()` is called."""
        import httpx

        sc = self.scenario
        assert sc.max_requests is not None
        limits = httpx.Limits(max_connections=sc.concurrency, max_keepalive_connections=sc.concurrency)
        inflight = threading.Semaphore(sc.concurrency)
        shifted = sc.shift_to is None
        fault_sent = sc.fault is None
        fault_until = 0.0
        t0 = time.monotonic()
        last_tick = t0
        n = 0
        with (
            httpx.Client(timeout=self.request_timeout, limits=limits) as client,
            ThreadPoolExecutor(max_workers=sc.concurrency, thread_name_prefix="sim") as pool,
        ):

            def task(q: JudgedQuery) -> None:
                try:
                    self._one(client, q)
                finally:
                    inflight.release()

            while n < sc.max_requests and not self._stop.is_set():
                now = time.monotonic()
                elapsed = now - t0
                if elapsed >= sc.duration:
                    break
                if not shifted and elapsed >= sc.shift_at:
                    assert sc.shift_to is not None
                    self.shift(sc.shift_to)
                    shifted = True
                if not fault_sent and sc.fault is not None and elapsed >= sc.fault.at:
                    fault_sent = True
                    self._inject(sc.fault)
                    fault_until = now + sc.fault.duration
                if on_tick is not None and now - last_tick >= 0.5:
                    last_tick = now
                    on_tick(self.snapshot())
                due = t0 + n / sc.rate
                if due > now:
                    self._stop.wait(min(due - now, 0.25))
                    continue
                n += 1
                if not inflight.acquire(blocking=False):
                    with self._lock:
                        self.stats.dropped += 1
                    continue
                q = self._pick()
                with self._lock:
                    self.stats.sent += 1
                    self.stats.by_dataset[q.dataset] = self.stats.by_dataset.get(q.dataset, 0) + 1
                pool.submit(task, q)
        if fault_sent and sc.fault is not None and time.monotonic() < fault_until:
            try:
                clear_faults(self.url, self.token)
            except Exception as exc:
                with self._lock:
                    self.stats.last_error = f"clearing faults: {exc}"
        with self._lock:
            self.stats.elapsed_s = time.monotonic() - t0
        final = self.snapshot()
        if on_tick is not None:
            on_tick(final)
        return final

    def _inject(self, fault: FaultSpec) -> None:
        try:
            answer = inject_fault(self.url, fault, self.token)
            rec = {"kind": fault.kind, "at": fault.at, "duration": fault.duration, "answer": answer}
        except Exception as exc:
            rec = {"kind": fault.kind, "at": fault.at, "error": f"{type(exc).__name__}: {exc}"}
        with self._lock:
            self.stats.faults.append(rec)


def simulate(scenario: Scenario, target_url: str, **kwargs: Any) -> SimStats:
    """Library entry: one bounded run, blocking."""
    return Simulator(scenario, target_url, **kwargs).run()
