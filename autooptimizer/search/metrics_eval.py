"""NDCG@10 for offline evaluation (ir_measures, trec_eval semantics) and for one served ranking (online feedback).

Both use linear gain (grade) and a log2(rank + 1) discount, like trec_eval's ndcg_cut.10.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


def ndcg_at_10(run: Mapping[str, Mapping[str, float]], qrels: Mapping[str, Mapping[str, int]]) -> float:
    """Mean nDCG@10 over every query in `qrels` with a positive judgment; a query missing from `run` scores 0."""
    per_query = ndcg_at_10_per_query(run, qrels)
    return sum(per_query.values()) / len(per_query) if per_query else 0.0


def ndcg_at_10_per_query(
    run: Mapping[str, Mapping[str, float]], qrels: Mapping[str, Mapping[str, int]]
) -> dict[str, float]:
    import ir_measures
    from ir_measures import nDCG

    judged = {q: {d: int(g) for d, g in j.items()} for q, j in qrels.items() if any(g > 0 for g in j.values())}
    out = dict.fromkeys(judged, 0.0)
    sub_run = {q: {d: float(s) for d, s in r.items()} for q, r in run.items() if q in judged and r}
    if sub_run:
        for m in ir_measures.iter_calc([nDCG @ 10], judged, sub_run):
            out[m.query_id] = float(m.value)
    return out


def ndcg10_ranking(ranking: Sequence[str], judgments: Mapping[str, int]) -> float | None:
    """nDCG@10 of one served ranking against its judgments; None when nothing is judged relevant."""
    ideal = sorted((g for g in judgments.values() if g > 0), reverse=True)[:10]
    if not ideal:
        return None
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    seen: set[str] = set()
    dcg = 0.0
    for i, doc in enumerate(ranking[:10]):
        if doc in seen:
            continue
        seen.add(doc)
        g = judgments.get(doc, 0)
        if g > 0:
            dcg += g / math.log2(i + 2)
    return dcg / idcg
