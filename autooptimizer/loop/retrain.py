"""The retrain half of an NDCG cycle: the data agent's and the ML agent's tools, in an explicit order.

    split         the shifted domain's judged queries, halved by the seed: feedback half / held-out half (loop)
    feedback      the live feedback log's records of that domain, served by the champion, held-out queries
                  dropped -> feedback.jsonl (loop: the service's log, filtered and normalised)
    dataset       data.build_dataset(feedback_path)                  -> base.dataset_manifest.yaml
    diagnose      data.explain_reranker(dataset, model=champion)     -> diagnostic_report.json
    augment       data.augment_dataset(dataset, out_csv)             -> augmented_dataset.csv
    dataset_final data.build_dataset(feedback_path, augmented_csv)   -> dataset_manifest.yaml (what training used)
    train         ml.train_reranker(dataset, parent=champion, "ltr") -> challenger version, MLflow run id
    register      ml.register_model(version)                         -> MLflow model version (alias `challenger`)
    evaluate      ml.evaluate_model(...) x4: champion and challenger on the held-out half (a BEIR folder of just
                  those queries, the corpus linked) and on the original domain's `test` split; gold too when it is
                  not the champion -> the profile's promotion rule -> evaluation.json

Every tool call is a gated registry call (PDP + audit) with arguments spelled out from the tools' args models
(autooptimizer/tools/data.py, ml.py) and results read by their documented keys. Held-out queries never reach the
training data: they are removed from the feedback before the dataset is built, whether or not the traffic sent them
(the demo's simulator replays only the feedback half, so they are never served either).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from autooptimizer.errors import AutoOptError, InputError

TRAINER = "ltr"  # the ML path's measured repair (ml/repair.py, docs/benchmarks.md): a gated ltr_fusion expert
TRAIN_TIME_BUDGET_S = 600.0
RECENT_RECORDS = 2000  # how far back in the feedback log `shifted_domain` looks


# -- pure helpers (also used by the demo, so its simulator replays exactly the feedback half) ----------------------
def domain_split(domain: str | Path, seed: int) -> tuple[list[str], list[str]]:
    """(feedback query ids, held-out query ids) of a domain's judged queries: ml.feedback.split_judged's seeded
    half/half split, the one `autoopt repair` uses."""
    from autooptimizer.ml.feedback import split_judged
    from autooptimizer.search.beir import load_beir
    from autooptimizer.settings import get_settings

    ds = load_beir(get_settings().dataset(str(domain)))
    feedback, holdout = split_judged(sorted(ds.judged_queries()), seed)
    if len(feedback) < 4 or not holdout:
        raise InputError(f"{ds.name} has too few judged queries to split ({len(feedback) + len(holdout)}).",
                         "Retrain on a domain with at least 5 judged queries.")
    return feedback, holdout


def normalise(rec: dict[str, Any]) -> dict[str, Any]:
    """A live feedback record in the dataset builder's terms: the simulator sends query_id "<dataset>/<id>" and no
    dataset; the builder keys queries by (dataset, id) and takes the domain from `dataset`."""
    qid, ds = rec.get("query_id"), rec.get("dataset")
    if not ds and isinstance(qid, str) and "/" in qid:
        ds, qid = qid.split("/", 1)
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


# -- the sequence ---------------------------------------------------------------------------------------------------
def run_retrain(runner: Any, cid: str, opts: Any, state: dict[str, Any], *, champion: str,
                artifacts: Path) -> dict[str, Any]:
    """Run the steps above; returns {model_version, promotable, reason, mlflow_run_id, evaluation}."""
    artifacts.mkdir(parents=True, exist_ok=True)
    ev = {"cycle_id": cid}
    log = runner.settings.feedback_log

    def call(step: str, agent: str, tool: str, args: dict[str, Any]) -> dict[str, Any]:
        return runner.step(cid, step, lambda: runner.tool(state, agent, tool, args, evidence=ev), {"args": args})

    domain = opts.domain_data or shifted_domain(log)
    if not domain:
        raise AutoOptError("No shifted domain: the feedback log names no dataset.",
                           "Pass --domain-data (the new domain's BEIR folder or name).")
    name = Path(str(domain)).name
    state["domain"] = name

    def split() -> dict[str, Any]:
        fb, held = domain_split(domain, opts.seed)
        doc = {"domain": name, "seed": opts.seed, "feedback": fb, "holdout": held}
        (artifacts / "split.json").write_text(json.dumps(doc, indent=1))
        return {"domain": name, "seed": opts.seed, "feedback_queries": len(fb), "holdout_queries": len(held)}

    runner.step(cid, "split", split)
    holdout = json.loads((artifacts / "split.json").read_text())["holdout"]
    fb_path = artifacts / "feedback.jsonl"
    runner.step(cid, "feedback", lambda: extract_feedback(log, name, champion, set(holdout), fb_path))

    base = call("dataset", "data", "build_dataset",
                {"feedback_path": str(fb_path), "parent_version": champion, "hard_negatives": 10})
    _copy(Path(base["path"]) / "dataset_manifest.yaml", artifacts / "base.dataset_manifest.yaml")

    diag = call("diagnose", "data", "explain_reranker",
                {"dataset": base["hash"], "model": champion, "explainer": "shap", "queries": 3, "max_evals": 64,
                 "out_dir": str(artifacts)})
    state["diagnosis"] = {"verdict": diag["verdict"], "jsd": diag["jsd"],
                          "under_weighted_terms": diag["under_weighted_terms"]}

    aug = call("augment", "data", "augment_dataset",
               {"dataset": base["hash"], "out_csv": str(artifacts / "augmented_dataset.csv"),
                "size": min(5000, max(8, base["counts"]["queries"])), "seed": opts.seed})
    final = call("dataset_final", "data", "build_dataset",
                 {"feedback_path": str(fb_path), "parent_version": champion, "hard_negatives": 10,
                  "augmented_csv": aug["path"], "from_dataset": base["hash"]})
    _copy(Path(final["path"]) / "dataset_manifest.yaml", artifacts / "dataset_manifest.yaml")

    trained = call("train", "ml", "train_reranker",
                   {"dataset": final["hash"], "parent": champion, "trainer": TRAINER, "seed": opts.seed,
                    "time_budget_s": TRAIN_TIME_BUDGET_S})
    challenger, run_id = trained["version"], trained["run_id"]
    if not challenger or challenger == champion:
        raise AutoOptError(f"Training returned no new model version ({challenger!r}).",
                           "Check the train step in `autoopt loop show CYCLE`.")
    if run_id:
        (artifacts / "mlflow_run_id.txt").write_text(f"{run_id}\n")
    reg = call("register", "ml", "register_model", {"version": challenger})
    state["mlflow"] = {"run_id": run_id, "registered_model": reg.get("name"),
                       "mlflow_version": reg.get("mlflow_version")}

    evaluation = runner.step(cid, "evaluate", lambda: _evaluate(
        runner, state, ev, champion=champion, challenger=challenger, domain=domain, holdout=holdout,
        original=opts.original, artifacts=artifacts))
    return {"model_version": challenger, "promotable": evaluation["promotable"], "mlflow_run_id": run_id,
            "reason": "; ".join(evaluation["reasons"]), "evaluation": evaluation}


def _evaluate(runner: Any, state: dict[str, Any], ev: dict[str, Any], *, champion: str, challenger: str,
              domain: str | Path, holdout: list[str], original: str, artifacts: Path) -> dict[str, Any]:
    """Offline NDCG@10 on the held-out half and the original domain's test split, then the promotion rule."""
    from autooptimizer.ml.evaluate import promotion_rule
    from autooptimizer.search import aliases

    held_dir = holdout_folder(domain, holdout, artifacts / "holdout")

    def scores(version: str) -> dict[str, Any]:
        new = runner.tool(state, "ml", "evaluate_model", {"model": version, "data": str(held_dir)}, evidence=ev)
        orig = runner.tool(state, "ml", "evaluate_model", {"model": version, "data": original, "split": "test"},
                           evidence=ev)
        return {"version": version, "new_domain_ndcg@10": new["ndcg@10"], "original_ndcg@10": orig["ndcg@10"],
                "new_domain_mrr@10": new["mrr@10"], "new_domain_recall@100": new["recall@100"],
                "new_domain_queries": new["queries"], "original_queries": orig["queries"]}

    champ, chall = scores(champion), scores(challenger)
    gold_v = aliases.get_alias(aliases.GOLD)
    gold = None if gold_v in (None, champion, challenger) else scores(gold_v)
    decision = promotion_rule(champ, chall, gold if gold is not None else champ, env=runner.settings.env)
    doc = {"champion": champ, "challenger": chall, "gold": gold or {"version": gold_v, "same_as": "champion"},
           "promotable": decision.promotable, "reasons": decision.reasons,
           "new_domain_margin": decision.new_domain_margin, "original_tolerance": decision.original_tolerance,
           "holdout": {"folder": str(held_dir), "queries": len(holdout),
                       "note": "judged queries of the new domain the traffic never trained on"},
           "original": f"{original} test"}
    (artifacts / "evaluation.json").write_text(json.dumps(doc, indent=2))
    return doc


def _copy(src: Path, dst: Path) -> None:
    dst.write_bytes(src.read_bytes())
