"""The retrain pipeline's own data steps (no tool): the split of the new domain's judged queries, the feedback the
dataset is built from, and the held-out folder the evaluation reads.

Held-out queries never reach training: they are dropped from the feedback before the dataset is built, whether or
not the traffic sent them (the demo's simulator replays only the feedback half, so they are never served either).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autooptimizer.errors import InputError

if TYPE_CHECKING:
    from autooptimizer.ml.pipeline import PipelineState

RECENT_RECORDS = 2000  # how far back in the feedback log `shifted_domain` looks
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


def shifted_domain(log: Path, recent: int = RECENT_RECORDS) -> str | None:
    """The dataset most of the recent traffic comes from (what the NDCG gate is reading now)."""
    counts = Counter(r.get("dataset") for r in _records(log)[-recent:] if r.get("dataset"))
    return counts.most_common(1)[0][0] if counts else None


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
    """Halve the domain's judged queries (or hold out the listed ones) -> split.json."""
    fb, held = judged_split(_domain(state), state.seed or 0, state.holdout_file)
    state.feedback_qids, state.holdout = fb, held
    if state.artifacts is not None:
        doc = {"domain": state.domain, "seed": state.seed, "feedback": fb, "holdout": held}
        (state.artifacts / "split.json").write_text(json.dumps(doc, indent=1))
    return {"domain": state.domain, "seed": state.seed, "feedback_queries": len(fb), "holdout_queries": len(held)}


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
        if state.min_feedback is not None and judged < state.min_feedback:
            raise NotEnoughFeedback(
                f"Only {judged} judged {state.domain} queries served by {state.champion} are in the feedback log; "
                f"the profile's retrain.minNewFeedback asks for {state.min_feedback} before retraining (below it the "
                "expected held-out gain is too small: docs/benchmarks.md, Repair: learning curve).",
                "Let the shifted traffic run with feedback longer, or lower retrain.minNewFeedback in the profile.")
        info["judged_queries"] = judged
    else:
        info = simulate_domain_feedback(_domain(state), state.champion, state.feedback_qids, out)
    state.feedback_path = str(out)
    return info


def _domain(state: PipelineState) -> str:
    if not state.domain_data:
        raise InputError("The retrain has no new domain.", "Pass --domain-data (the new domain's BEIR folder or name).")
    return state.domain_data
