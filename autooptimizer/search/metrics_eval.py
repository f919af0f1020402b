"""NDCG@10: the project's one definition, computed by `ir_measures` (trec_eval's `ndcg_cut.10`, via pytrec_eval).

Every NDCG in the package comes from here: offline evaluation (`ndcg_at_10`, `ndcg_at_10_per_query`, over a run of
scores) and one served ranking (`ndcg10_ranking`: the service's feedback, the simulator, the A/B samples). The
definition, as ir_measures computes it (tests/test_search_metrics_eval.py pins each point):
- gain = the grade itself (linear, not 2^grade - 1), discount 1 / log2(rank + 1), ranks 1..10;
- ideal DCG: the query's positive grades, best first, cut at 10; a query without a positive grade has no NDCG
  (offline: not counted; one ranking: None);
- negative grades count as 0 (never below; they never enter the ideal); unjudged documents count 0;
- a document counts once: a run holds one score per document, and in a served list a repeated document adds nothing
  at its later slots, which still take their place (the documents after it keep their served ranks);
- equal scores (runs only) are ordered as trec_eval does: by document id, descending.

`autooptimizer.ml.ltr` computes the same quantity vectorised over candidate score arrays, because its training loop
evaluates it thousands of times per fit; tests/test_ml_ltr.py checks that it agrees with this module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal


def ndcg_at_10(run: Mapping[str, Mapping[str, float]], qrels: Mapping[str, Mapping[str, int]]) -> float:
    """Mean nDCG@10 over every query in `qrels` with a positive judgment; a query missing from `run` scores 0."""
    per_query = ndcg_at_10_per_query(run, qrels)
    return sum(per_query.values()) / len(per_query) if per_query else 0.0


def ndcg_at_10_per_query(
    run: Mapping[str, Mapping[str, float]], qrels: Mapping[str, Mapping[str, int]]
) -> dict[str, float]:
    """query id -> nDCG@10 for every query in `qrels` with a positive judgment (0 when `run` has nothing for it)."""
    return per_query(run, qrels, ("ndcg@10",))["ndcg@10"]


Measure = Literal["ndcg@10", "mrr@10", "recall@100"]


def per_query(
    run: Mapping[str, Mapping[str, float]], qrels: Mapping[str, Mapping[str, int]], measures: Sequence[Measure]
) -> dict[Measure, dict[str, float]]:
    """measure -> {query id -> value} over every query in `qrels` with a positive judgment; a query the run has
    nothing for scores 0. The project's one call into ir_measures: "mrr@10" is RR(rel=1)@10, "recall@100" is
    R(rel=1)@100 (grade >= 1 is relevant), "ndcg@10" as defined above."""
    import ir_measures
    from ir_measures import RR, R, nDCG

    known = {"ndcg@10": nDCG @ 10, "mrr@10": RR(rel=1) @ 10, "recall@100": R(rel=1) @ 100}
    wanted: dict[Any, Measure] = {known[name]: name for name in measures}
    judged = {q: {d: int(g) for d, g in j.items()} for q, j in qrels.items() if any(g > 0 for g in j.values())}
    out: dict[Measure, dict[str, float]] = {name: dict.fromkeys(judged, 0.0) for name in measures}
    sub_run = {q: {d: float(s) for d, s in r.items()} for q, r in run.items() if q in judged and r}
    if sub_run:
        for m in ir_measures.iter_calc(list(wanted), judged, sub_run):
            out[wanted[m.measure]][m.query_id] = float(m.value)
    return out


def ndcg10_ranking(ranking: Sequence[str], judgments: Mapping[str, int]) -> float | None:
    """nDCG@10 of one served ranking (doc ids, best first) against its judgments; None when nothing is judged
    relevant. The first 10 slots become a run (score 10 - slot) and ir_measures scores it."""
    scores = ndcg_at_10_per_query({"q": _slots_as_run(ranking, judgments)}, {"q": judgments})
    return scores.get("q")


def _slots_as_run(ranking: Sequence[str], judgments: Mapping[str, int]) -> dict[str, float]:
    """The first 10 slots of a served list as {doc id: score}, scores falling with the slot. A repeated document's
    slot holds a placeholder id that is neither judged nor served, so it adds no gain but keeps its rank."""
    top = list(ranking[:10])
    taken = set(judgments) | set(top)
    run: dict[str, float] = {}
    for slot, doc in enumerate(top):
        key = doc
        if key in run:
            key = f"<repeat {slot}>"
            while key in taken:
                key += "~"
        run[key] = float(10 - slot)
    return run
