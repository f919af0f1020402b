"""Serving cost side by side: CPU time per query of two model versions over the same queries, in one process.

The two pipelines answer each query in turn (champion, then challenger), so whatever else the machine is doing hits
both alike; the figure that matters is the ratio of their medians (process CPU time, one thread), which is what the
speed issue's target (a challenger costs at most 1.2x the champion) and the promotion rule's latency budget are about.
"""

from __future__ import annotations

import statistics
import time
from typing import TYPE_CHECKING

from pydantic import BaseModel

if TYPE_CHECKING:
    from autooptimizer.search.beir import BeirDataset
    from autooptimizer.search.pipeline import SearchPipeline

NOISE_FLOOR_MS = 0.5
"""An extra CPU time per query at or under this never counts against the budget: it is below what a request's latency
can show (the champion spends ~13 ms per request on SciFact, docs/benchmarks.md "Search service capacity"), and on a
few sub-millisecond queries it is timer noise (a 0.10 vs 0.13 ms pair read as 1.28x once)."""


class DomainCost(BaseModel):
    dataset: str
    queries: int
    champion_ms: float
    challenger_ms: float
    ratio: float


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
    out = []
    with query_cache_off():  # both pay for every query's encoding, whatever earlier requests cached
        for name, split in datasets:
            out.append(_domain_cost(pipes, load_beir(settings.dataset(name), split=split), name, queries))
    return out


def _domain_cost(pipes: list[SearchPipeline], dataset: BeirDataset, name: str, queries: int) -> DomainCost:
    """Median per-query CPU ms of the two pipelines answering `dataset`'s first `queries` queries in turn."""
    texts = list(dataset.queries.values())[:queries]
    for text in texts[:5]:  # warm caches of both alike
        for pipe in pipes:
            pipe.search(text)
    times: list[list[float]] = [[], []]
    for text in texts:
        for i, pipe in enumerate(pipes):
            t0 = time.process_time()
            pipe.search(text)
            times[i].append(time.process_time() - t0)
    champ, chall = (statistics.median(t) * 1000 for t in times)
    return DomainCost(dataset=name, queries=len(texts), champion_ms=round(champ, 2), challenger_ms=round(chall, 2),
                      ratio=round(chall / champ, 3))


def budget_ratio(rows: list[DomainCost]) -> float:
    """The ratio the promotion budget is checked against: the worst domain's, where a domain whose challenger costs
    at most NOISE_FLOOR_MS more per query counts as at most 1.0. Raises ValueError on no rows (unmeasured)."""
    if not rows:
        raise ValueError("no domain was measured")
    return max(r.ratio if r.challenger_ms - r.champion_ms > NOISE_FLOOR_MS else min(r.ratio, 1.0) for r in rows)
