"""The retrain pipeline's own data steps (no tool): the split of the new domain's judged queries, the feedback the
dataset is built from, and the held-out folder the evaluation reads.

Held-out queries never reach training: they are dropped from the feedback before the dataset is built, whether or
not the traffic sent them (the demo's simulator replays only the feedback half, so they are never served either).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autooptimizer.errors import InputError

if TYPE_CHECKING:
    from autooptimizer.ml.forgetting import EvalSet
    from autooptimizer.ml.pipeline import PipelineState

RECENT_RECORDS = 2000  # how far back `shifted_domain` looks when the log's records carry no time (`ts`)
MIN_FEEDBACK_QUERIES = 4


def judged_split(domain: str | Path, seed: int, holdout_file: str | Path | None = None) -> tuple[list[str], list[str]]:
    """(feedback query ids, held-out query ids) of a domain's judged queries: ml.feedback.split_judged's seeded
    half/half split, or exactly the ids listed in `holdout_file` held out."""
    from autooptimizer.ml.feedback import read_qids, split_judged
    from autooptimizer.search.beir import load_beir
    from autooptimizer.settings import get_settings

    ds = load_beir(get_settings().dataset(str(domain)))
    judged = sorted(ds.judged_queries())
    if holdout_file:
        held = set(read_qids(holdout_file))
        unknown = sorted(held - set(judged))
        if unknown:
            raise InputError(f"{len(unknown)} held-out ids are not judged queries of {ds.name}: {unknown[:5]}.",
                             "List query ids from the dataset's qrels.")
        feedback, holdout = [q for q in judged if q not in held], sorted(held)
    else:
        feedback, holdout = split_judged(judged, seed)
    if len(feedback) < MIN_FEEDBACK_QUERIES or not holdout:
        raise InputError(f"{ds.name} has too few judged queries to split ({len(feedback)} for feedback, "
                         f"{len(holdout)} held out).", f"Retrain on a domain with at least {MIN_FEEDBACK_QUERIES} "
                         "feedback queries and 1 held-out query (5 judged queries at least).")
    return feedback, holdout


def domain_split(domain: str | Path, seed: int) -> tuple[list[str], list[str]]:
    """The seeded split of a domain's judged queries, as a fix cycle makes it (the demo replays the first half)."""
    return judged_split(domain, seed)


def normalise(rec: dict[str, Any]) -> dict[str, Any]:
    """A live feedback record in the dataset builder's terms: the simulator sends query_id "<dataset>/<id>" and no
    dataset; the builder keys queries by (dataset, id) and takes the domain from `dataset`."""
    from autooptimizer.ml.feedback import split_query_id

    ds, qid = split_query_id(rec.get("dataset"), rec.get("query_id"))
    return {**rec, "dataset": ds, "query_id": qid}


def _records(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise InputError(f"The feedback log {path} does not exist.",
                         "Send traffic with feedback to the search service first (autoopt simulate).")
    out = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                out.append(normalise(json.loads(line)))
            except (json.JSONDecodeError, AttributeError):
                continue  # a torn last line while the service appends
    return out


def shifted_domain(log: Path, recent: int = RECENT_RECORDS, *, now: float | None = None,
                   window_s: float | None = None, baseline_window_s: float | None = None,
                   reference: float | None = None) -> str | None:
    """The domain that explains the NDCG gate's drop, read from the gate's own windows (gates.py): the current
    window [now - window_s, now] and the baseline window of `baseline_window_s` that ends where it starts.

    Each current-window record of domain d adds (baseline mean NDCG@10 of all traffic - its own ndcg10) to d's
    deficit; the domain with the largest deficit wins. So a new domain that 10 % of the traffic already comes from
    wins over the old majority still served well, and an old domain that regressed counts as much as a new one.
    `reference` (the gate's anchor: the champion's NDCG@10 on healthy traffic) replaces the baseline mean when it is
    higher: after the baseline slid onto a weak domain, or from one weak domain to another, the deficit is still
    measured from the healthy level. Without windows (or with no timed, judged record in them) it falls back to the
    majority of the last `recent` records, the rule for logs without `ts` or a gate reading."""
    records = _records(log)
    if window_s is not None and baseline_window_s is not None:
        end = time.time() if now is None else now
        chosen = _largest_deficit(records, end - window_s, end, end - window_s - baseline_window_s, reference)
        if chosen is not None:
            return chosen
    counts = Counter(r.get("dataset") for r in records[-recent:] if r.get("dataset"))
    return counts.most_common(1)[0][0] if counts else None


def _largest_deficit(records: list[dict[str, Any]], start: float, end: float, base_start: float,
                     reference: float | None = None) -> str | None:
    """See `shifted_domain`; None when the windows hold no judged record (or the drop is nowhere positive)."""
    current: list[tuple[str, float]] = []
    baseline: list[float] = []
    for r in records:
        ts, ndcg, ds = r.get("ts"), r.get("ndcg10"), r.get("dataset")
        if not isinstance(ts, int | float) or not isinstance(ndcg, int | float) or not ds:
            continue
        if start <= ts <= end:
            current.append((str(ds), float(ndcg)))
        elif base_start <= ts < start:
            baseline.append(float(ndcg))
    if not current or not (baseline or reference):
        return None
    base = max(sum(baseline) / len(baseline) if baseline else 0.0, reference or 0.0)
    deficit: dict[str, float] = {}
    for ds, ndcg in current:
        deficit[ds] = deficit.get(ds, 0.0) + base - ndcg
    best = max(deficit, key=lambda d: deficit[d])
    return best if deficit[best] > 0 else None


def extract_feedback(log: Path, domain: str, served_by: str, exclude: set[str], out: Path) -> dict[str, Any]:
    """Write the training feedback: the domain's records served by `served_by`, minus the `exclude`d query ids."""
    kept, dropped = [], 0
    for r in _records(log):
        if r.get("dataset") != domain or r.get("model_version") != served_by:
            continue
        if str(r.get("query_id")) in exclude:
            dropped += 1
            continue
        kept.append(r)
    if not kept:
        raise InputError(f"The feedback log {log} has no {domain} record served by {served_by} outside the "
                         "held-out half.", "Let the shifted traffic run with feedback for a while, then retry.")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r) + "\n" for r in kept))
    return {"path": str(out), "records": len(kept), "queries": len({r["query_id"] for r in kept}),
            "held_out_records_dropped": dropped, "served_by": served_by, "domain": domain}


def judged_queries_in_log(log: Path, domain: str, served_by: str, *, exclude: set[str] | None = None,
                          since: float | None = None) -> set[str]:
    """Query ids of `domain` served by `served_by` with a positive judgment in the live log (only records after
    `since`, a unix time, when given), minus `exclude`: what a retrain could learn from that an earlier one did not."""
    out: set[str] = set()
    for r in _records(log):
        if r.get("dataset") != domain or r.get("model_version") != served_by:
            continue
        ts = r.get("ts")
        if since is not None and not (isinstance(ts, int | float) and ts > since):
            continue
        qid = str(r.get("query_id") or r.get("query"))
        if qid not in (exclude or set()) and any(g > 0 for g in (r.get("judgments") or {}).values()):
            out.add(qid)
    return out


def simulate_domain_feedback(domain: str | Path, champion: str, qids: list[str], out: Path) -> dict[str, Any]:
    """Offline feedback: `qids` served by `champion` and judged from the qrels, in the service's log format."""
    from autooptimizer.ml.evaluate import load_split
    from autooptimizer.ml.feedback import simulate_feedback
    from autooptimizer.search import model_store
    from autooptimizer.settings import get_settings

    collection, queries, qrels = load_split(get_settings().dataset(str(domain)))
    simulate_feedback(model_store.load(champion), collection, {q: queries[q] for q in qids}, qrels, out,
                      dataset=collection.name)
    return {"path": str(out), "records": len(qids), "queries": len(qids), "held_out_records_dropped": 0,
            "served_by": champion, "domain": collection.name}


def holdout_folder(domain: str | Path, qids: list[str], out: Path) -> Path:
    """A BEIR folder of only the held-out queries (corpus linked, never copied): evaluate_model takes a folder."""
    from autooptimizer.search.beir import load_beir
    from autooptimizer.settings import get_settings

    src = get_settings().dataset(str(domain))
    ds = load_beir(src)
    folder = out / ds.name  # same name -> same collection ids and the same cached embeddings/index
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "corpus.jsonl"
    if not link.exists():
        os.symlink((src / "corpus.jsonl").resolve(), link)
    keep = set(qids)
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": ds.queries[q]}) + "\n"
                                                  for q in sorted(keep)))
    rows = [f"{q}\t{d}\t{g}\n" for q in sorted(keep) for d, g in sorted(ds.qrels.get(q, {}).items())]
    (folder / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(rows))
    return folder


# -- the steps (ml/pipeline.py: `split`, `feedback`) ---------------------------------------------------------------
class NotEnoughFeedback(InputError):
    """The live log holds fewer new judged queries than the profile asks for before a retrain."""


def judged_feedback_queries(path: Path) -> int:
    """Distinct queries of a feedback file with at least one positive judgment (what an expert trains on)."""
    keys = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        if any(g > 0 for g in (rec.get("judgments") or {}).values()):
            keys.add((rec.get("dataset"), rec.get("query_id") or rec.get("query")))
    return len(keys)


def split_step(state: PipelineState) -> dict[str, Any]:
    """Halve the domain's judged queries (or hold out the listed ones) -> split.json. With `fixed_eval_sets` (the
    loop's chained repairs) the held-out half is the domain's fixed evaluation set (ml/forgetting.py): fixed now on
    its first repair, the same ids on every later one; the original domain's test split is fixed too."""
    holdout_file: str | Path | None = state.holdout_file
    fixed = _fixed_holdout(state) if state.fixed_eval_sets else None
    if fixed is not None:
        from autooptimizer.ml.forgetting import qids_file

        holdout_file = qids_file(fixed)
    fb, held = judged_split(_domain(state), state.seed or 0, holdout_file)
    if state.fixed_eval_sets:
        fixed = _fix_sets(state, held)
    state.feedback_qids, state.holdout = fb, held
    if state.artifacts is not None:
        doc = {"domain": state.domain, "seed": state.seed, "feedback": fb, "holdout": held}
        if fixed is not None:
            doc["eval_set"] = {"key": fixed.key, "hash": fixed.hash, "fixed_by": fixed.cycle_id}
        (state.artifacts / "split.json").write_text(json.dumps(doc, indent=1))
    return {"domain": state.domain, "seed": state.seed, "feedback_queries": len(fb), "holdout_queries": len(held)}


def _feedback_needed(state: PipelineState) -> int | None:
    """Judged queries the feedback step waits for: retrain.minNewFeedback, but never more than the domain's judged
    queries outside the held-out set (`state.feedback_qids`, known from its qrels): when every one of them is in
    the log, waiting cannot bring more (cisi's feedback half holds 38, med's 15), and the promotion rule still
    refuses a challenger that loses on the held-out set. None: no minimum."""
    if state.min_feedback is None:
        return None
    return min(state.min_feedback, len(state.feedback_qids)) if state.feedback_qids else state.min_feedback


def feedback_step(state: PipelineState) -> dict[str, Any]:
    """The training feedback -> feedback.jsonl: the live log's records of the domain served by the champion, held-out
    queries dropped; without a live log, the feedback half served offline by the champion."""
    if state.artifacts is None or state.champion is None:
        raise InputError("The feedback step needs an artifacts folder and the champion.",
                         "Run it from `autoopt repair` or a cycle, which give both.")
    out = state.artifacts / "feedback.jsonl"
    if state.feedback_log is not None:
        info = extract_feedback(state.feedback_log, state.domain or "", state.champion, set(state.holdout), out)
        judged = judged_feedback_queries(out)
        needed = _feedback_needed(state)
        if needed is not None and judged < needed:
            raise NotEnoughFeedback(
                f"Only {judged} judged {state.domain} queries served by {state.champion} are in the feedback log; "
                f"the profile's retrain.minNewFeedback asks for {needed} before retraining (below it the "
                "expected held-out gain is too small: docs/benchmarks.md, Repair: learning curve).",
                "Let the shifted traffic run with feedback longer, or lower retrain.minNewFeedback in the profile.")
        info["judged_queries"] = judged
    else:
        info = simulate_domain_feedback(_domain(state), state.champion, state.feedback_qids, out)
    state.feedback_path = str(out)
    return info


def _fixed_holdout(state: PipelineState) -> EvalSet | None:
    """The domain's fixed evaluation set, when an earlier repair fixed it (raises EvalSetError when unreadable)."""
    from autooptimizer.ml.forgetting import get_set

    return get_set(Path(_domain(state)).name)


def _fix_sets(state: PipelineState, held: list[str]) -> EvalSet:
    """Fix the domain's held-out ids (kept when already fixed) and the original domain's judged test queries."""
    from autooptimizer.ml.evaluate import load_split
    from autooptimizer.ml.forgetting import fix_set
    from autooptimizer.settings import get_settings

    if state.original:
        _, queries, _ = load_split(get_settings().dataset(state.original), "test")
        fix_set(Path(state.original).name, state.original, queries, split="test", cycle_id=state.cycle_id)
    return fix_set(Path(_domain(state)).name, _domain(state), held, cycle_id=state.cycle_id)


def _domain(state: PipelineState) -> str:
    if not state.domain_data:
        raise InputError("The retrain has no new domain.", "Pass --domain-data (the new domain's BEIR folder or name).")
    return state.domain_data
