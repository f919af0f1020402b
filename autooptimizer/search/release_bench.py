"""`autoopt bench release`: what a rolled-back cross-encoder leaves in the search service, per glibc arena setting.

The month soak's search service kept ~230 MiB after an operator's untrained cross-encoder, overloaded by traffic,
was rolled back, although the release (search/release.py) gives its weights back. Side by side in one run, for each
arena setting, a real service process (`python -m autooptimizer.infra.serve`) on the given datasets:

1. serves the champion (throttled traffic, 4 clients for `settle_s`) -> RSS `before`;
2. serves an untrained cross-encoder (the soak's `bad_model`) as the stable version under `overload_threads`
   closed-loop clients, `replicas` of them searching at once (the soak's service had been scaled to 8 when the bad
   model came) and the rest queued, as in the soak -> RSS `overloaded`;
3. rolls back to the champion, serves throttled traffic, waits for the release to finish, serves throttled traffic
   again -> RSS `after`;
4. closed-loop champion traffic for `throughput_s` seconds -> answered req/s (what the setting costs).

`kept` = after - before. `glibc` runs with MALLOC_ARENA_MAX = 8 x cores (glibc's own default, set explicitly so the
service's `limit_arenas()` leaves it); `2` with the service's default cap (infra/memory.py).
"""

from __future__ import annotations

import itertools
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, Field

from autooptimizer.errors import InputError
from autooptimizer.infra.memory import ARENA_MAX, rss_bytes

BAD = "bench-release-untrained-ce"
MIB = 1 << 20


class ReleaseRun(BaseModel):
    arenas: str = Field(description="'glibc' (8 x cores) or the cap")
    before_mib: float
    overloaded_mib: float
    after_mib: float
    kept_mib: float = Field(description="after - before")
    cross_encoder_requests: int
    released: dict[str, object] = Field(description="the service's /admin/state `released` after the rollback")
    champion_rps: float = Field(description="closed-loop answered req/s on the champion after the rollback")
    failed: int


class ReleaseBench(BaseModel):
    champion: str
    datasets: list[str]
    cores: int
    replicas: int = Field(description="concurrent searches the service runs (the soak's latency remedy reached 8)")
    overload_threads: int
    runs: list[ReleaseRun]


def _traffic(url: str, queries: list[str], threads: int, seconds: float, pause: float) -> tuple[int, int]:
    """Closed-loop clients for `seconds` (each sleeps `pause` between requests). Returns (answered, failed)."""
    import httpx

    stop, counts, lock = time.monotonic() + seconds, [0, 0], threading.Lock()

    def client(offset: int) -> None:
        cycle = itertools.islice(itertools.cycle(queries), offset, None)
        with httpx.Client(timeout=300) as http:
            while time.monotonic() < stop:
                try:
                    http.get(f"{url}/search", params={"q": next(cycle), "k": 10}).raise_for_status()
                    ok = 0
                except httpx.HTTPError:
                    ok = 1
                with lock:
                    counts[ok] += 1
                if pause:
                    time.sleep(pause)

    workers = [threading.Thread(target=client, args=(i * 7,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return counts[0], counts[1]


def _released(url: str, wait_s: float = 300.0) -> dict[str, object]:
    import httpx

    state: dict[str, object] = {}
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        state = httpx.get(f"{url}/admin/state", timeout=30).json().get("released") or {}
        if state.get("done"):
            break
        time.sleep(0.2)
    return state


def run_setting(champion: str, datasets: list[str], arenas: str, queries: list[str], replicas: int,
                overload_threads: int, overload_s: float, throughput_s: float, settle_s: float,
                log_dir: Path) -> ReleaseRun:
    """One service process through champion -> overloaded cross-encoder -> champion (module docstring)."""
    from autooptimizer.infra.net import free_port
    from autooptimizer.infra.stack import SubprocessService
    from autooptimizer.loop.deployer import LocalDeployer
    from autooptimizer.loop.gitops import HelmPatch
    from autooptimizer.settings import get_settings

    cap = str(8 * (os.cpu_count() or 1)) if arenas == "glibc" else arenas
    port = free_port()
    svc = SubprocessService([sys.executable, "-m", "autooptimizer.infra.serve", "--port", str(port), "--datasets",
                             ",".join(datasets), "--model", champion], port, log_dir / f"release-{arenas}.log")
    svc.start(timeout=900, env={"MALLOC_ARENA_MAX": cap})
    try:
        assert svc.proc is not None
        pid = svc.proc.pid
        deployer = LocalDeployer(svc.url, token=get_settings().api_token)  # the loop's own admin-API client

        def serve(version: str) -> None:
            deployer.apply(HelmPatch(model_version=version, replicas=replicas), f"bench-release-{version}")

        def mib() -> float:
            return round((rss_bytes(pid) or 0) / MIB, 1)

        serve(champion)  # at `replicas`
        failed = _traffic(svc.url, queries, 4, settle_s, 0.05)[1]
        before = mib()
        serve(BAD)
        ce_ok, ce_failed = _traffic(svc.url, queries, overload_threads, overload_s, 0.0)
        overloaded = mib()
        serve(champion)
        failed += _traffic(svc.url, queries, 4, settle_s, 0.05)[1]
        released = _released(svc.url)
        failed += _traffic(svc.url, queries, 4, settle_s, 0.05)[1] + ce_failed
        after = mib()
        answered, more = _traffic(svc.url, queries, 4, throughput_s, 0.0)
    finally:
        svc.stop()
    return ReleaseRun(arenas=arenas, before_mib=before, overloaded_mib=overloaded, after_mib=after,
                      kept_mib=round(after - before, 1), cross_encoder_requests=ce_ok, released=released,
                      champion_rps=round(answered / throughput_s, 1), failed=failed + more)


def check_inputs(champion: str, datasets: list[str]) -> None:
    """What a service process would otherwise fail on minutes in, with only its log's tail to say why: the champion
    (a stored version, not the bench's own bad model, which would leave nothing to roll back) and the datasets."""
    from autooptimizer.search import model_store
    from autooptimizer.settings import get_settings

    if champion == BAD:
        raise InputError(f"The champion {BAD!r} is the untrained cross-encoder the bench deploys and rolls back: "
                         "nothing would be rolled back.", "Pass --model with a trained version (or set the champion).")
    model_store.load(champion)
    if not datasets:
        raise InputError("No dataset to serve.", "Pass one or more BEIR datasets, e.g. --datasets scifact.")
    for name in datasets:
        get_settings().dataset(name)


def run(champion: str, datasets: list[str], replicas: int = 8, overload_threads: int = 32, overload_s: float = 60.0,
        throughput_s: float = 15.0, settle_s: float = 30.0, say: Callable[[str], None] = print) -> ReleaseBench:
    """Both arena settings, one after the other, on the same queries. Raises NotFoundError, ConfigError or
    InputError for a wrong champion or dataset before any service starts (`check_inputs`), InfraError when a
    service fails to start (its log's tail in the message)."""
    from autooptimizer.search import model_store
    from autooptimizer.search.capacity import query_pool
    from autooptimizer.search.model_store import ModelSpec
    from autooptimizer.settings import get_settings

    check_inputs(champion, datasets)
    queries = query_pool()[:300]
    if not queries:
        raise InputError(f"No BEIR queries under AUTOOPT_DATA_DIR ({get_settings().data_dir}) to send.",
                         "Point AUTOOPT_DATA_DIR at the folder of BEIR datasets (queries.jsonl in each).")
    # the soak's bad_model: the base MiniLM with an untrained cross-encoder head, reranking the top 20
    model_store.save(ModelSpec(version=BAD, kind="cross_encoder", fusion_weight=1.0, rerank_depth=20))
    log_dir = get_settings().path("bench", "release")
    runs = []
    for arenas in ("glibc", str(ARENA_MAX)):
        say(f"arenas {arenas}: champion, then {BAD} under {overload_threads} clients for {overload_s:g} s, rollback")
        runs.append(run_setting(champion, datasets, arenas, queries, replicas, overload_threads, overload_s,
                                throughput_s, settle_s, log_dir))
        say(f"arenas {arenas}: kept {runs[-1].kept_mib} MiB after the rollback")
    return ReleaseBench(champion=champion, datasets=datasets, cores=os.cpu_count() or 1, replicas=replicas,
                        overload_threads=overload_threads, runs=runs)
