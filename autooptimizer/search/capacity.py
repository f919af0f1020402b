"""`autoopt bench search`: the search service's capacity on this machine, and how far it is from the physical limit.

1. Stage costs, in process, one thread, no HTTP: the champion over the served collection answers `calibrate`
   distinct queries (query cache off, then the same queries again with it on); the stage clock (search/stages.py)
   splits each request into BM25, query encoding, rerank, fusion and serialisation, and the thread's CPU time
   gives the CPU cost of a request.
2. The physical limit: limit = cores / (CPU seconds per request). The load generator shares the cores, so the limit
   with it is cores / (server + client CPU per request). Both are upper bounds: they assume perfect scaling and no
   framework, socket or scheduler cost.
3. Load: for each (workers, query cache) setting a real service process (`python -m autooptimizer.infra.serve`),
   a short warm-up, then open-loop steps of rising rate (infra/loadgen.py). Reported per setting: every step's
   p50/p95/p99, the throughput at p95 <= 100 ms, the saturation point (the most it answered at any step), the
   service's own CPU per request (from /proc, all its processes) and the throughput as a ratio to the limit.

Queries: the distinct query texts of every dataset under AUTOOPT_DATA_DIR in a seeded order, so the cache-off runs
encode every query and the cache-on runs show what replayed traffic (the simulator's cycles) costs.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import statistics
import sys
import time
from pathlib import Path

from pydantic import BaseModel, Field

from autooptimizer.infra.loadgen import StepResult, run_steps, saturated
from autooptimizer.search.stages import STAGES

P95_TARGET_MS = 100.0


class StageCost(BaseModel):
    stage: str
    mean_ms: float
    median_ms: float


class Calibration(BaseModel):
    query_cache: bool
    queries: int
    stages: list[StageCost]
    cpu_ms_per_request: float = Field(description="mean thread CPU time of one request (search + serialise)")
    limit_rps: float = Field(description="cores / CPU per request: the pipeline alone on every core")


class SettingRun(BaseModel):
    workers: int
    query_cache: bool
    steps: list[StepResult]
    rps_at_p95_target: float | None = Field(description=f"most answered/s at a step with p95 <= {P95_TARGET_MS} ms")
    saturation_rps: float = Field(description="most answered/s at any step")
    saturated_at_offered_rps: float | None = Field(description="offered rate of the first saturated step")
    server_cpu_ms_per_request: float | None = Field(description="all service processes' CPU / requests answered")
    client_cpu_ms_per_request: float | None
    limit_rps: float = Field(description="cores / (calibrated CPU per request + load generator's CPU per request)")
    ratio_to_limit: float


class CapacityBench(BaseModel):
    model: str
    datasets: list[str]
    cores: int
    others_cores: float | None = Field(description="CPU other processes used during the load runs, in cores")
    calibration: list[Calibration]
    settings: list[SettingRun]


def query_pool(seed: int = 0) -> list[str]:
    """Distinct query texts of every BEIR dataset under AUTOOPT_DATA_DIR that the service accepts (at most
    MAX_QUERY_CHARS: cisi's ten longest are refused with 422 by design, which read as errors here), seeded order."""
    from autooptimizer.search.app import MAX_QUERY_CHARS
    from autooptimizer.search.beir import load_beir
    from autooptimizer.settings import get_settings

    root = get_settings().require_data_dir()
    texts: set[str] = set()
    for d in sorted(p for p in root.iterdir() if (p / "queries.jsonl").is_file()):
        texts.update(q.strip() for q in load_beir(d).queries.values() if 0 < len(q.strip()) <= MAX_QUERY_CHARS)
    out = sorted(texts)
    random.Random(seed).shuffle(out)
    return out


def calibrate(model: str, datasets: list[str], queries: list[str], cores: int) -> list[Calibration]:
    """Stage costs of `queries` through the model's pipeline, cache off then on (same queries: every one a hit)."""
    import torch

    from autooptimizer.search import model_store, stages
    from autooptimizer.search.app import SearchResponse
    from autooptimizer.search.beir import load_collection
    from autooptimizer.search.encoder import Encoder
    from autooptimizer.search.pipeline import SearchPipeline

    torch.set_num_threads(1)
    pipe = SearchPipeline(model_store.load(model), load_collection(datasets)).warm(progress=False)
    encoder = getattr(pipe.reranker, "encoder", None)
    out = []
    for cache in (False, True):
        if isinstance(encoder, Encoder):
            encoder.query_cache_size = 4096 if cache else 0
        per_stage: dict[str, list[float]] = {s: [] for s in STAGES}
        cpu: list[float] = []
        for q in queries:
            c0 = time.thread_time()
            stages.begin()
            hits = pipe.search(q, 10)
            with stages.timed("serialise"):
                SearchResponse(hits=hits, model_version=model, latency_ms=1.0, request_id="x" * 32).model_dump_json()
            spent = stages.end()
            cpu.append(time.thread_time() - c0)
            for s in STAGES:
                per_stage[s].append(spent.get(s, 0.0))
        mean_cpu = statistics.fmean(cpu)
        out.append(Calibration(
            query_cache=cache, queries=len(queries),
            stages=[StageCost(stage=s, mean_ms=round(1000 * statistics.fmean(v), 3),
                              median_ms=round(1000 * statistics.median(v), 3)) for s, v in per_stage.items()],
            cpu_ms_per_request=round(1000 * mean_cpu, 3), limit_rps=round(cores / mean_cpu, 1)))
    return out


def _tree_cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its children (uvicorn's workers), from /proc; 0 for a process that is gone."""
    total = 0.0
    todo = [pid]
    tick = os.sysconf("SC_CLK_TCK")
    while todo:
        p = todo.pop()
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{p}/task").iterdir():
                with contextlib.suppress(OSError):
                    todo += [int(c) for c in (task / "children").read_text().split()]
    return total


def _wait_idle(pid: int, limit_s: float = 90.0) -> None:
    """Until the service's processes use under 0.2 core for a second: every worker has loaded its models."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        c0 = _tree_cpu_seconds(pid)
        time.sleep(1.0)
        if _tree_cpu_seconds(pid) - c0 < 0.2:
            return


def run_setting(model: str, datasets: list[str], workers: int, cache: bool, rates: list[float], seconds: float,
                pool: list[str], cpu_ms: float, cores: int, log_dir: Path, say=print) -> tuple[SettingRun, float]:
    """One setting against a fresh service process: (its run, all CPU seconds its processes used, start-up too)."""
    from autooptimizer.infra.net import free_port
    from autooptimizer.infra.stack import SubprocessService

    port = free_port()
    argv = [sys.executable, "-m", "autooptimizer.infra.serve", "--port", str(port), "--datasets", ",".join(datasets),
            "--model", model, "--workers", str(workers)]
    env = {"AUTOOPT_QUERY_CACHE": "4096" if cache else "0", "AUTOOPT_THREADS": "1"}
    svc = SubprocessService(argv, port, log_dir / f"search-w{workers}-{'cache' if cache else 'nocache'}.log")
    svc.start(timeout=600, env=env)
    try:
        assert svc.proc is not None
        _wait_idle(svc.proc.pid)
        stream = itertools.cycle(pool)
        run_steps(svc.url + "/search", lambda: next(stream), [10.0], 3.0)  # connections, first-call costs
        cpu0 = _tree_cpu_seconds(svc.proc.pid)
        steps = run_steps(svc.url + "/search", lambda: next(stream), rates, seconds,
                          on_step=lambda s: say(f"  workers={workers} cache={cache}: {s.offered_rps:g}/s offered, "
                                                f"{s.achieved_rps}/s answered, p95 {s.p95_ms} ms"))
        answered = sum(s.ok for s in steps)
        total_cpu = _tree_cpu_seconds(svc.proc.pid)
        server_cpu = total_cpu - cpu0
    finally:
        svc.stop()
    fine = [s.achieved_rps for s in steps if s.p95_ms is not None and s.p95_ms <= P95_TARGET_MS and not s.errors]
    first_sat = next((s.offered_rps for s in steps if saturated(s)), None)
    client = [s.client_cpu_ms_per_request for s in steps if s.client_cpu_ms_per_request is not None]
    client_ms = statistics.fmean(client) if client else 0.0
    limit = cores / ((cpu_ms + client_ms) / 1000)
    best = max((s.achieved_rps for s in steps), default=0.0)
    return SettingRun(
        workers=workers, query_cache=cache, steps=steps, rps_at_p95_target=max(fine) if fine else None,
        saturation_rps=best, saturated_at_offered_rps=first_sat,
        server_cpu_ms_per_request=round(1000 * server_cpu / answered, 3) if answered else None,
        client_cpu_ms_per_request=round(client_ms, 3), limit_rps=round(limit, 1), ratio_to_limit=round(best / limit, 2)
    ), total_cpu


def run(model: str, datasets: list[str], workers: list[int], caches: list[bool], rates: list[float],
        seconds: float, calibrate_queries: int = 200, say=print) -> CapacityBench:
    from autooptimizer.infra.cpu import busy_seconds, usable_cores
    from autooptimizer.settings import get_settings

    cores = usable_cores()
    pool = query_pool()
    say(f"calibrating stage costs on {calibrate_queries} queries (in process, one thread)")
    cal = calibrate(model, datasets, pool[:calibrate_queries], cores)
    cpu_ms = {c.query_cache: c.cpu_ms_per_request for c in cal}
    log_dir = get_settings().path("bench", "search", "x").parent
    busy0, own0 = busy_seconds(), _tree_cpu_seconds(os.getpid())
    t0 = time.monotonic()
    runs, served_cpu = [], 0.0
    for w in workers:
        for cache in caches:
            say(f"workers={w} query cache={'on' if cache else 'off'}")
            r, spent = run_setting(model, datasets, w, cache, rates, seconds, pool, cpu_ms[cache], cores, log_dir, say)
            runs.append(r)
            served_cpu += spent
    busy1, own1 = busy_seconds(), _tree_cpu_seconds(os.getpid())
    others = None
    if busy0 is not None and busy1 is not None:  # busy seconds that were neither the bench's nor the services'
        others = round(max(0.0, (busy1 - busy0) - (own1 - own0) - served_cpu) / (time.monotonic() - t0), 2)
    return CapacityBench(model=model, datasets=datasets, cores=cores, others_cores=others, calibration=cal,
                         settings=runs)
