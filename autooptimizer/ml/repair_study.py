"""In-process repair studies: the expert's held-out gain for variants of the unsupervised adaptation and for growing
amounts of feedback (the learning curve), without the repair's other steps.

A full `autoopt repair` also explains, augments, registers and evaluates the original domain (SciFact is untouched by
construction: provenance routing); comparing adaptations only needs the expert fit and its ranking of the held-out
half. So one study fits `ml.ltr.fit_expert` on the seed's feedback half (or its first n queries, in the seed's
order, so 10 is inside 20 is inside 40) and scores the held-out half with the same features serving computes, against
the parent's ranking as it serves (`ml.ltr.served_parent_ndcg`; studies before round D used its weights on the
expert's features, ~0.003 from the served figure). Develop domains only: the caller checks the confirm registry
(ml/protocol.py).
"""

from __future__ import annotations

import time

import numpy as np
from pydantic import BaseModel

from autooptimizer.ml.adapt import Adaptation


class StudyRow(BaseModel):
    domain: str
    seed: int
    variant: str
    feedback: int
    heldout: int
    parent: float
    expert: float
    gain: float
    enabled: bool
    seconds: float
    chosen: dict = {}


def _heldout_features(params, arrays, collection, queries: dict[str, str], qrels, depth: int,
                      params_msl: int = 256):
    """(features per held-out query, gains, ideal grades, raw BM25 scores, raw cosines): the features exactly as
    `LtrFusionReranker.features` computes them over the candidates serving gives the expert; the raw scores of BM25's
    own candidates only (the parent's first stage)."""
    from autooptimizer.search.embeddings import doc_embeddings
    from autooptimizer.search.encoder import get_encoder
    from autooptimizer.search.pipeline import get_bm25
    from autooptimizer.search.rerankers.ltr_fusion import Expert, FirstStage, Rm3, expert_features

    enc = get_encoder(None, params_msl)
    docs = doc_embeddings(collection, enc, progress=False)
    bm25 = get_bm25(collection)
    rm3 = Rm3(bm25)
    ex = Expert(params, None, arrays)
    qids = [q for q in sorted(queries) if any(g > 0 for g in qrels.get(q, {}).values())]
    qv = enc.encode([queries[q] for q in qids])
    first_stage = FirstStage(collection, bm25, docs, params)
    feats, gains, ideals, bms, coss = [], [], [], [], []
    for q, v in zip(qids, qv, strict=True):
        idx, s, n = first_stage.candidates(queries[q], v, depth)
        ids = [collection.doc_ids[i] for i in idx]
        top = np.argsort(-s, kind="stable")[: params.rm3_docs]
        w = rm3.expanded(queries[q], [(ids[i], collection.text(ids[i])) for i in top], s[top], params.rm3_terms,
                         params.rm3_lambda, idf=params.rm3_idf)
        tuned = None if params.bm25_k1 is None else rm3.bm25_with(
            queries[q], [(d, collection.text(d)) for d in ids], params.bm25_k1, params.bm25_b, params.bm25_avgdl)
        feats.append(expert_features(ex, v, ids, docs[idx], s, rm3.scores(w, idx), bm25_tuned=tuned))
        gains.append(np.array([qrels[q].get(d, 0) for d in ids], dtype=np.float64))
        ideals.append(np.array([g for g in qrels[q].values() if g > 0], dtype=np.float64))
        bms.append(s[:n])
        coss.append(docs[idx[:n]] @ v)
    return feats, gains, ideals, bms, coss


def study(domain: str, seed: int, variants: dict[str, Adaptation], sizes: list[int | None] | None = None,
          original: str = "scifact", depth: int = 100) -> list[StudyRow]:
    """One row per (variant, feedback size) on `domain`'s seed split (size None = the whole feedback half; a size
    above the feedback half is skipped). A size below 1 is an InputError before anything loads: -1 would otherwise
    slice the seed's order as all but one query."""
    from autooptimizer.errors import InputError

    small = [n for n in sizes or [] if n is not None and n < 1]
    if small:
        raise InputError(f"Feedback size(s) {', '.join(map(str, small))} must be at least 1.",
                         "Give sizes as counts of feedback queries or `all`, e.g. 10,20,40,all.")
    from autooptimizer.ml.ltr import Packed, fit_expert, served_parent_ndcg
    from autooptimizer.ml.pipeline_data import judged_split
    from autooptimizer.ml.train import reference_queries, unjudged_queries
    from autooptimizer.search import aliases, model_store
    from autooptimizer.search.beir import load_beir, load_collection
    from autooptimizer.search.encoder import base_max_seq_length
    from autooptimizer.search.rerankers.ltr_fusion import FEATURES
    from autooptimizer.settings import get_settings

    ds = load_beir(get_settings().dataset(domain))
    collection = load_collection([domain])
    name = collection.name
    parent = model_store.load(aliases.require_alias(aliases.CHAMPION))
    ref = reference_queries(parent, original)
    fb, held = judged_split(domain, seed)
    order = list(np.random.default_rng(seed + 17).permutation(fb))  # nested subsets: 10 inside 20 inside 40
    pref = lambda rel: {f"{name}/{d}": g for d, g in rel.items()}  # noqa: E731
    held_q = {q: ds.queries[q] for q in held}
    held_rel = {q: pref(ds.qrels.get(q, {})) for q in held}
    rows = []
    for size in sizes or [None]:
        use = order if size is None or size >= len(order) else order[:size]
        if size is not None and size > len(order):
            continue
        for label, ad in variants.items():
            t0 = time.perf_counter()
            unjudged = unjudged_queries([domain], set(ds.judged_queries().values())) if ad.unjudged else []
            params, arrays, rep = fit_expert(
                f"{name}-study", {q: ds.queries[q] for q in use}, {q: pref(ds.qrels.get(q, {})) for q in use},
                collection, parent.fusion_weight, seed=seed, depth=depth, gate_negatives=ref, bags=10,
                parent_depth=parent.rerank_depth, domains=[name], adaptation=ad, unjudged=unjudged,
                max_seq_length=base_max_seq_length(parent))
            feats, gains, ideals, bms, coss = _heldout_features(params, arrays, collection, held_q, held_rel, depth,
                                                               base_max_seq_length(parent))
            p = Packed(feats, gains, ideals)
            base = float(served_parent_ndcg(bms, coss, gains, ideals, parent.fusion_weight, parent.rerank_depth).mean())
            w = np.array([params.weights.get(f, 0.0) for f in FEATURES]) if params.enabled else None
            got = float(p.ndcg(w).mean()) if w is not None else base
            chosen = {k: v for k, v in params.adaptation.items() if k != "settings"}
            if "bm25" in chosen:
                chosen["bm25"] = {k: chosen["bm25"][k] for k in ("k1", "b")}
            rows.append(StudyRow(domain=domain, seed=seed, variant=label, feedback=len(use), heldout=len(p),
                                 parent=round(base, 4), expert=round(got, 4), gain=round(got - base, 4),
                                 enabled=params.enabled, seconds=round(time.perf_counter() - t0, 1),
                                 chosen={**chosen, "cv_gain": rep.selection.cv_gain}))
    return rows
