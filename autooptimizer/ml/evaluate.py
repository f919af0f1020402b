"""Offline evaluation (nDCG@10, MRR@10, Recall@100 from `search.metrics_eval`, over ir-measures) and the promotion rule.

A model is evaluated on one BEIR folder with BM25 over that folder's own corpus, the way the brief's numbers were
measured. The promotion thresholds come from the environment profile (`promotion` section), never from code.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from autooptimizer.errors import InputError
from autooptimizer.search.metrics_eval import Measure
from autooptimizer.search.model_store import ModelSpec

MEASURES: tuple[Measure, ...] = ("ndcg@10", "mrr@10", "recall@100")


class EvalResult(BaseModel):
    ndcg_at_10: float = Field(alias="ndcg@10")
    mrr_at_10: float = Field(alias="mrr@10")
    recall_at_100: float = Field(alias="recall@100")
    queries: int
    model_config = {"populate_by_name": True}

    def public(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True)


def evaluate_run(run: Mapping[str, Mapping[str, float]], qrels: Mapping[str, Mapping[str, int]]) -> EvalResult:
    """Mean measures over every query with a positive judgment; a query missing from the run scores 0. Definitions:
    `autooptimizer.search.metrics_eval` (the project's one wrapper over ir-measures)."""
    from autooptimizer.search.metrics_eval import per_query

    values = per_query(run, qrels, MEASURES)
    n = len(values["ndcg@10"])
    if not n:
        raise InputError("No query has a positive judgment; nothing to evaluate.", "Check the qrels and the split.")
    return EvalResult(**{name: round(sum(values[name].values()) / n, 4) for name in MEASURES}, queries=n)


def load_split(data_dir: str | Path, split: str | None = None, qids: set[str] | None = None):
    """(Collection over the folder's corpus, its queries, its qrels with collection doc ids), optionally a subset."""
    from autooptimizer.search.beir import Collection, load_beir

    root = Path(data_dir)
    full = load_beir(root)
    part = load_beir(root, split=split) if split else full
    collection = Collection([full])
    name = full.name
    queries = dict(part.judged_queries())
    if qids is not None:
        missing = sorted(set(qids) - set(queries))
        if missing:
            raise InputError(f"{len(missing)} requested query ids are not judged queries of {root}: {missing[:5]}.",
                             "Pass query ids that exist and have a relevant judgment.")
        queries = {q: t for q, t in queries.items() if q in qids}
    qrels = {q: {f"{name}/{d}": g for d, g in part.qrels.get(q, {}).items()} for q in queries}
    return collection, queries, qrels


def evaluate_spec(spec: ModelSpec, data_dir: str | Path, split: str | None = None, qids: set[str] | None = None,
                  progress: bool = False) -> EvalResult:
    """Evaluate one ModelSpec on a BEIR folder (optionally a split and/or a subset of query ids)."""
    from autooptimizer.search.pipeline import SearchPipeline

    collection, queries, qrels = load_split(data_dir, split, qids)
    pipe = SearchPipeline(spec, collection).warm(progress=progress)
    return evaluate_run(served_run(pipe, queries), qrels)


def served_run(pipe, queries: dict[str, str], k: int = 100) -> dict[str, dict[str, float]]:
    """The ranking as served (the version's own rerank depth), continued in BM25 order down to k for Recall@k."""
    run = pipe.run(queries, k=k)
    for qid, text in queries.items():
        ranked = run.setdefault(qid, {})
        if len(ranked) >= k:
            continue
        floor = min(ranked.values(), default=0.0)
        idx, _ = pipe.bm25.top(text, k)
        extra = [pipe.collection.doc_ids[i] for i in idx if pipe.collection.doc_ids[i] not in ranked]
        for n, doc in enumerate(extra[: k - len(ranked)], 1):
            ranked[doc] = floor - n
    return run


def resolve_model(model: str):
    """ALIAS (champion, challenger, gold, ...), a stored version id, or a path to a version folder/model.json."""
    from autooptimizer.search import aliases, model_store
    from autooptimizer.search.model_store import ModelSpec

    p = Path(model).expanduser()
    if p.is_dir() and (p / "model.json").is_file():
        p = p / "model.json"
    if p.is_file():
        return ModelSpec.model_validate_json(p.read_text())
    version = aliases.get_alias(model)
    if version is not None:
        return model_store.load(version)
    if model in ("champion", "challenger", "gold"):
        aliases.require_alias(model)
    return model_store.load(model)


def _score(scores: Mapping[str, float], key: str) -> float | None:
    """A finite score, or None when it is missing or not a number (NaN compares false and would pass a rule)."""
    value = scores.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


class PromotionDecision(BaseModel):
    promotable: bool
    reasons: list[str]
    new_domain_margin: float
    original_tolerance: float


def promotion_rule(
    champion: Mapping[str, float], challenger: Mapping[str, float], gold: Mapping[str, float] | None = None,
    env: str | None = None, *, serving_cost_ratio: float | None,
) -> PromotionDecision:
    """Challenger must beat the champion on the new domain by `newDomainMargin`, lose at most `originalTolerance`
    on the original domain, against the champion and against gold, and cost at most `maxServingCostRatio` times the
    champion's CPU per query (`serving_cost_ratio`, measured side by side; None = not measured, refused while the
    profile sets a budget)."""
    from autooptimizer.profiles import load_profile
    from autooptimizer.settings import get_settings

    p = load_profile(env or get_settings().env).promotion
    key_new, key_orig = "new_domain_ndcg@10", "original_ndcg@10"
    reasons, ok = [], True
    new_champ, new_chall = _score(champion, key_new), _score(challenger, key_new)
    if new_champ is None or new_chall is None:  # an unknown score never reads as a win
        ok = False
        reasons.append("new-domain NDCG@10 unknown (missing or not a number): not promotable")
    else:
        gain = new_chall - new_champ
        if gain < p.new_domain_margin:
            ok = False
            reasons.append(f"new-domain gain {gain:+.4f} < margin {p.new_domain_margin}")
        else:
            reasons.append(f"new-domain gain {gain:+.4f} >= margin {p.new_domain_margin}")
    for label, ref in (("champion", champion), ("gold", gold)):
        if ref is None:
            continue
        before, after = _score(ref, key_orig), _score(challenger, key_orig)
        if before is None or after is None:
            ok = False
            reasons.append(f"original-domain NDCG@10 vs {label} unknown (missing or not a number): not promotable")
            continue
        drop = before - after
        if drop > p.original_tolerance:
            ok = False
            reasons.append(f"original-domain drop vs {label} {drop:+.4f} > tolerance {p.original_tolerance}")
        else:
            reasons.append(f"original-domain drop vs {label} {drop:+.4f} <= tolerance {p.original_tolerance}")
    budget = p.max_serving_cost_ratio
    if budget is not None:
        ratio = serving_cost_ratio if serving_cost_ratio is None or math.isfinite(serving_cost_ratio) else None
        if ratio is None:
            ok = False
            reasons.append(f"serving cost unknown (not measured): the budget is {budget}x the champion's")
        elif ratio > budget:
            ok = False
            reasons.append(f"serving cost {ratio:.2f}x the champion's CPU per query > budget {budget}x")
        else:
            reasons.append(f"serving cost {ratio:.2f}x the champion's CPU per query <= budget {budget}x")
    return PromotionDecision(promotable=ok, reasons=reasons, new_domain_margin=p.new_domain_margin,
                             original_tolerance=p.original_tolerance)
