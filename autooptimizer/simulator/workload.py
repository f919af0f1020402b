"""Judged queries to replay: query text plus the qrels the simulator posts back as feedback.

Doc ids are prefixed `"<dataset>/<docid>"`, as the service serves a union collection (see search/beir.py).
SciFact is replayed from its `train` split by default: the feedback log becomes training data for the ML path,
and SciFact `test` must never reach training.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel


class JudgedQuery(BaseModel):
    dataset: str
    query_id: str
    text: str
    judgments: dict[str, int]  # prefixed doc id -> grade


class Workload(BaseModel):
    """Per-dataset judged queries in a seeded shuffled order; `next(dataset)` cycles through them."""

    queries: dict[str, list[JudgedQuery]]
    cursor: dict[str, int] = {}

    @property
    def datasets(self) -> list[str]:
        return list(self.queries)

    def next(self, dataset: str) -> JudgedQuery:
        items = self.queries[dataset]
        i = self.cursor.get(dataset, 0)
        self.cursor[dataset] = i + 1
        return items[i % len(items)]


def load_workload(
    datasets: Sequence[str | Path],
    split: str | None = "train",
    max_queries: int | None = None,
    seed: int = 0,
    max_chars: int = 1000,
) -> Workload:
    """Load judged queries (at least one positive judgment) from each dataset, by name under AUTOOPT_DATA_DIR or path.

    `split` applies where a dataset has splits (SciFact); collections with one qrels file use all their queries.
    """
    from autooptimizer.search.beir import load_beir, prefixed
    from autooptimizer.settings import get_settings

    settings = get_settings()
    rng = random.Random(seed)
    out: dict[str, list[JudgedQuery]] = {}
    for item in datasets:
        ds = load_beir(settings.dataset(item), split=split)
        judged = [
            JudgedQuery(
                dataset=ds.name,
                query_id=qid,
                text=text[:max_chars],
                judgments={prefixed(ds.name, d): g for d, g in ds.qrels[qid].items()},
            )
            for qid, text in sorted(ds.judged_queries().items())
            if text.strip()
        ]
        rng.shuffle(judged)
        if max_queries:
            judged = judged[:max_queries]
        if not judged:
            from autooptimizer.errors import InputError

            raise InputError(f"Dataset {ds.name} has no judged queries to replay.", "Use a dataset with qrels.")
        out[ds.name] = judged
    return Workload(queries=out)
