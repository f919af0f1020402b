"""Serving cost side by side: CPU time per query of two model versions over the same queries, in one process.

The two pipelines answer each query in turn (champion, then challenger), so whatever else the machine is doing hits
both alike; the figure that matters is the ratio of their medians, which is what the speed issue's target (a
challenger costs at most 1.2x the champion) and the promotion rule's latency budget are about.

The answer must not depend on what the process did before or does meanwhile (the optimizer measures inside
`autoopt serve`, beside its API, scheduler and other tools):
- every query pays its encoding: the block runs under `query_cache_off()`, which bypasses the encoders' query LRU on
  the measuring thread only (an evaluation or earlier measurement had filled it in the second month soak: champion
  0.24 ms, challenger 0.97 ms, a 3.95x refusal; both ~10 ms when each encodes);
- the clock is the measuring thread's CPU time (`time.thread_time`) when torch and BLAS run on one thread
  (AUTOOPT_THREADS=1, as in CI, the soak and each service worker): the whole forward pass runs on the calling thread,
  and other threads of the process (API requests, a training, another measurement) cannot add to it. With more
  threads the forward pass is split across torch's pool, which thread time would miss, so process CPU time is used
  and other threads' work counts too; `clock` names which one a row used;
- each row carries what every version did for its timed queries (`VersionRun`: vectors computed vs read from the
  LRU, reranked requests, median ms per stage), and a row where any vector came from the LRU is refused
  (MeasurementError) rather than read as a cost.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field

from autooptimizer.errors import AutoOptError
from autooptimizer.search import stages
from autooptimizer.search.stages import STAGES

if TYPE_CHECKING:
    from autooptimizer.search.beir import BeirDataset
    from autooptimizer.search.pipeline import SearchPipeline

NOISE_FLOOR_MS = 0.5
"""An extra CPU time per query at or under this never counts against the budget: it is below what a request's latency
can show (the champion spends ~13 ms per request on SciFact, docs/benchmarks.md "Search service capacity"), and on a
few sub-millisecond queries it is timer noise (a 0.10 vs 0.13 ms pair read as 1.28x once)."""


Clock = Literal["thread", "process"]


class MeasurementError(AutoOptError):
    """A cost measurement whose own evidence shows it did not measure the full serving work."""


class VersionRun(BaseModel):
    """What one version did for a domain's timed queries: evidence that its figure is the full serving cost."""

    searches: int = Field(description="timed searches")
    encoded: int = Field(description="query vectors the model computed (one per search for a MiniLM reranker)")
    encode_cached: int = Field(description="query vectors read from an LRU instead (must be 0)")
    reranked: int = Field(description="searches whose reranker scored the candidates")
    stage_ms: dict[str, float] = Field(description="median wall ms per stage (search/stages.py)")


class DomainCost(BaseModel):
    dataset: str
    queries: int
    champion_ms: float
    challenger_ms: float
    ratio: float
    clock: Clock | None = Field(default=None, description="`thread`: the measuring thread's CPU time; `process`: "
                                "the process's (more than one torch thread)")
    champion: VersionRun | None = None
    challenger: VersionRun | None = None


def serving_cost(champion: str, challenger: str, datasets: list[tuple[str, str | None]], queries: int = 60,
                 serve: list[str] | None = None) -> list[DomainCost]:
    """Median per-query CPU ms of both versions on the first `queries` queries of each (dataset, split), both
    serving the union collection `serve` (default: the datasets themselves)."""
    from autooptimizer.infra.serve import limit_threads
    from autooptimizer.search import model_store
    from autooptimizer.search.beir import load_beir, load_collection
    from autooptimizer.search.encoder import query_cache_off
    from autooptimizer.search.pipeline import SearchPipeline
    from autooptimizer.settings import get_settings

    settings = get_settings()
    limit_threads(settings.threads)
    collection = load_collection(serve or [d for d, _ in datasets])
    pipes = [SearchPipeline(model_store.load(v), collection).warm(progress=False) for v in (champion, challenger)]
    clock = cpu_clock(settings.threads)
    out = []
    with query_cache_off():  # both pay for every query's encoding, whatever earlier requests cached
        for name, split in datasets:
            out.append(_domain_cost(pipes, load_beir(settings.dataset(name), split=split), name, queries, clock))
    return out


def cpu_clock(threads: int) -> Clock:
    """`thread` when torch and BLAS compute on the calling thread alone (`threads` 1 and torch agrees), else
    `process` (see the module docstring)."""
    import torch

    return "thread" if threads == 1 and torch.get_num_threads() == 1 else "process"


def _domain_cost(pipes: list[SearchPipeline], dataset: BeirDataset, name: str, queries: int,
                 clock: Clock) -> DomainCost:
    """Median per-query CPU ms of the two pipelines answering `dataset`'s first `queries` queries in turn."""
    texts = list(dataset.queries.values())[:queries]
    for text in texts[:5]:  # warm both alike (first-call allocations, RM3 term scores of the expert)
        for pipe in pipes:
            pipe.search(text)
    now: Callable[[], float] = time.thread_time if clock == "thread" else time.process_time
    times: list[list[float]] = [[], []]
    runs: list[list[tuple[dict[str, float], dict[str, int]]]] = [[], []]
    for text in texts:
        for i, pipe in enumerate(pipes):
            stages.begin()
            t0 = now()
            pipe.search(text)
            times[i].append(now() - t0)
            runs[i].append((stages.end(), stages.events()))
    champ, chall = (statistics.median(t) * 1000 for t in times)
    row = DomainCost(dataset=name, queries=len(texts), champion_ms=round(champ, 2), challenger_ms=round(chall, 2),
                     ratio=round(chall / champ, 3), clock=clock, champion=_version_run(runs[0]),
                     challenger=_version_run(runs[1]))
    for side, run in (("champion", row.champion), ("challenger", row.challenger)):
        if run is not None and run.encode_cached:
            raise MeasurementError(
                f"The serving-cost measurement on {name} read {run.encode_cached} of the {side}'s query vectors from "
                "a cache instead of computing them, so its CPU time is not the serving cost.",
                "Time searches inside encoder.query_cache_off() on the thread that runs them.")
    return row


def _version_run(runs: list[tuple[dict[str, float], dict[str, int]]]) -> VersionRun:
    """One version's evidence from its per-search (stage seconds, event counts)."""
    def total(event: str) -> int:
        return sum(ev.get(event, 0) for _, ev in runs)

    stage_ms = {s: round(1000 * statistics.median(t.get(s, 0.0) for t, _ in runs), 3) for s in STAGES
                if any(s in t for t, _ in runs)}
    return VersionRun(searches=len(runs), encoded=total("encoded"), encode_cached=total("encode_cached"),
                      reranked=total("reranked"), stage_ms=stage_ms)


def budget_ratio(rows: list[DomainCost]) -> float:
    """The ratio the promotion budget is checked against: the worst domain's, where a domain whose challenger costs
    at most NOISE_FLOOR_MS more per query counts as at most 1.0. Raises ValueError on no rows (unmeasured)."""
    if not rows:
        raise ValueError("no domain was measured")
    return max(r.ratio if r.challenger_ms - r.champion_ms > NOISE_FLOOR_MS else min(r.ratio, 1.0) for r in rows)
