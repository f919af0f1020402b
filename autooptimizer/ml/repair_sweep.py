"""Many repairs over domains and seeds, summarised against the bar: the figures docs/benchmarks.md records.

One split holds out as few as 15 queries (med), so one seed says little about a method; a sweep over seeds nobody
tuned on reports each domain's mean gain, its worst split and how many splits reached the bar.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from typing import Any

from pydantic import BaseModel

from autooptimizer.errors import InputError

_SEEDS = re.compile(r"^\d+(-\d+)?$")


class SweepRow(BaseModel):
    domain: str
    seed: int
    trainer: str = "ltr"
    adaptation: str | None = None
    max_steps: int | None = None
    champion: float
    challenger: float
    gain: float
    original_drop: float
    promotable: bool
    seconds: float


class DomainSummary(BaseModel):
    domain: str
    runs: int
    mean_gain: float
    worst_gain: float
    reached: int
    max_original_drop: float
    mean_seconds: float


def parse_seeds(text: str) -> list[int]:
    """'0', '20-29' or '1,4,7-9' -> sorted distinct seeds."""
    seeds: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        if not _SEEDS.match(part):
            raise InputError(f"Seed list {text!r} has an unreadable part {part!r}.",
                             "Write seeds as N, A-B or a comma-separated mix, e.g. 20-29 or 1,4,7-9.")
        lo, _, hi = part.partition("-")
        first, last = int(lo), int(hi or lo)
        if last < first:
            raise InputError(f"Seed range {part!r} runs backwards.", f"Write it as {last}-{first}.")
        seeds.update(range(first, last + 1))
    return sorted(seeds)


def run_one(domain: str, seed: int, original: str = "scifact", trainer: str = "ltr",
            adaptation: str | None = None, max_steps: int | None = None) -> SweepRow:
    """One repair from the current champion, reduced to the figures a sweep compares."""
    from autooptimizer.ml.repair import repair

    res = repair(domain, seed=seed, original=original, trainer=trainer, adaptation=adaptation, max_steps=max_steps)
    c, h = res.champion, res.challenger
    return SweepRow(domain=domain, seed=seed, trainer=trainer, adaptation=adaptation, max_steps=max_steps,
                    champion=c["new_domain_ndcg@10"], challenger=h["new_domain_ndcg@10"],
                    gain=round(h["new_domain_ndcg@10"] - c["new_domain_ndcg@10"], 4),
                    original_drop=round(c["original_ndcg@10"] - h["original_ndcg@10"], 4),
                    promotable=res.promotable, seconds=round(sum(res.step_seconds.values()), 1))


def sweep(domains: list[str], seeds: list[int], jobs: int = 1, original: str = "scifact",
          on_row: Callable[[SweepRow], None] | None = None, trainer: str = "ltr",
          adaptation: str | None = None, max_steps: int | None = None) -> list[SweepRow]:
    """Every (domain, seed) repair, `jobs` at a time in worker processes (1 = in this process), in a stable order,
    each trained by `trainer` with the named `adaptation` (None: its default), neural ones for at most `max_steps`
    (None: the train tool's default)."""
    from autooptimizer.ml.repair import check_method
    from autooptimizer.settings import get_settings

    check_method(trainer, adaptation, max_steps)
    for name in [*domains, original]:  # a misspelt domain fails now, not after an hour of repairs
        get_settings().dataset(name)
    work = [(d, s) for s in seeds for d in domains]
    done = on_row or (lambda _r: None)
    rows: list[SweepRow] = []
    if jobs <= 1:
        for d, s in work:
            rows.append(run_one(d, s, original, trainer, adaptation, max_steps))
            done(rows[-1])
    else:
        from autooptimizer.ml.model_registry import ensure_store

        ensure_store()  # the workers would each create a fresh home's MLflow schema at once, and collide
        calls = [(run_one, (d, s, original, trainer, adaptation, max_steps)) for d, s in work]
        rows = run_pooled(calls, jobs, done)
    order = {key: i for i, key in enumerate(work)}
    return sorted(rows, key=lambda r: order[(r.domain, r.seed)])


def run_pooled(calls: list[tuple[Callable[..., Any], tuple]], jobs: int, on_result: Callable[[Any], None]) -> list:
    """Each (function, args) in one of `jobs` worker processes (`worker_pool`); results in completion order, each
    passed to `on_result` as it lands. The first exception (or Ctrl-C) is raised, the queued calls never start and
    the running ones are ended (SIGTERM, then SIGKILL after 30 s): their results would be thrown away, and the pool's
    exit would otherwise hold the process until each had finished (minutes per repair)."""
    out: list = []
    with worker_pool(jobs) as pool:
        try:
            for fut in as_completed([pool.submit(fn, *args) for fn, args in calls]):
                out.append(fut.result())
                on_result(out[-1])
        except BaseException:
            running = list((pool._processes or {}).values())  # before shutdown forgets them (no public API < 3.14)
            pool.shutdown(wait=False, cancel_futures=True)
            for proc in running:
                if proc.is_alive():
                    proc.terminate()
            for proc in running:  # gone before the error surfaces; one that ignores SIGTERM is killed
                proc.join(timeout=30)
                if proc.is_alive():
                    proc.kill()
            raise
    return out


def worker_pool(jobs: int) -> ProcessPoolExecutor:
    """`jobs` spawned worker processes that end when this process ends, however it ends (`die_with_parent`)."""
    from autooptimizer.infra.processes import die_with_parent

    return ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"), initializer=die_with_parent,
                               initargs=(os.getpid(),))


def summarize(rows: list[SweepRow], bar: float) -> list[DomainSummary]:
    """Per domain, in first-seen order: mean and worst gain, splits with gain >= bar, worst original-domain drop."""
    out = []
    for d in dict.fromkeys(r.domain for r in rows):
        mine = [r for r in rows if r.domain == d]
        gains = [r.gain for r in mine]
        out.append(DomainSummary(domain=d, runs=len(mine), mean_gain=round(sum(gains) / len(gains), 4),
                                 worst_gain=min(gains), reached=sum(g >= bar - 1e-9 for g in gains),
                                 max_original_drop=max(r.original_drop for r in mine),
                                 mean_seconds=round(sum(r.seconds for r in mine) / len(mine), 1)))
    return out
