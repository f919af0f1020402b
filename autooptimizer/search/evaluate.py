"""Offline NDCG@10 of a model version on one BEIR dataset (the ML path's offline gate reuses this).

The pipeline runs over that dataset's own corpus, ids prefixed as the service serves them, so scores match what
the live service would rank for the same queries (BM25 statistics aside, which depend on the served union).
"""

from __future__ import annotations

from pydantic import BaseModel

from autooptimizer.search import model_store
from autooptimizer.search.beir import Collection, load_beir
from autooptimizer.search.metrics_eval import ndcg_at_10_per_query
from autooptimizer.search.model_store import ModelSpec
from autooptimizer.search.pipeline import SearchPipeline


class EvalResult(BaseModel):
    version: str
    dataset: str
    split: str | None
    ndcg10: float
    n_queries: int
    per_query: dict[str, float]


def evaluate(model: ModelSpec | str, dataset: str, split: str | None = None, progress: bool = False,
             max_queries: int | None = None) -> EvalResult:
    """Mean NDCG@10 over the judged queries of `dataset` (name under AUTOOPT_DATA_DIR or path), optionally a split.

    Never tune on SciFact `test`: use split="train" for choices and "test" only to report."""
    from autooptimizer.settings import get_settings

    spec = model if isinstance(model, ModelSpec) else model_store.load(model)
    root = get_settings().dataset(dataset)
    ds = load_beir(root, split=split)
    collection = Collection([load_beir(root)]) if split is not None else Collection([ds])
    queries = ds.judged_queries()
    if max_queries:
        queries = dict(sorted(queries.items())[:max_queries])
    pipe = SearchPipeline(spec, collection).warm(progress=progress)
    qrels = {q: j for q, j in collection.qrels(ds.name).items() if q in queries}
    per_query = ndcg_at_10_per_query(pipe.run(queries, k=10), qrels)
    mean = sum(per_query.values()) / len(per_query) if per_query else 0.0
    return EvalResult(version=spec.version, dataset=ds.name, split=split, ndcg10=round(mean, 4),
                      n_queries=len(per_query), per_query=per_query)
