"""Diagnosis (XAI): why does the reranker fail on the shifted traffic?

- Token attributions: `shap.Explainer` with a `shap.maskers.Text` masker over the model's query-document score, for
  the worst-served queries and their best judged document (LIME's text explainer is the cheaper option). Runs are
  kept small on purpose (few queries, one document each, bounded max_evals).
- Under-weighted terms: query terms the relevant document contains but the model gives below-average attribution.
- Query-term shift: Jensen-Shannon divergence (base 2, in [0, 1]) between the unigram distributions of the shifted
  queries and the model's training queries, against the divergence between a same-size sample of the training queries
  and the rest of them (the in-domain floor), plus the share of query terms never seen in training.
- Verdict: `data_issue` when the feedback itself is broken (judged documents missing from the collection, queries
  without any relevant judgment); else `corpus_shift` when the terms moved; else `model_regression`.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast

import numpy as np
from pydantic import BaseModel

from autooptimizer.errors import InputError

if TYPE_CHECKING:
    from shap import Explanation

    from autooptimizer.ml.dataset import Dataset
    from autooptimizer.search.beir import Collection
    from autooptimizer.search.model_store import ModelSpec
    from autooptimizer.search.rerankers.bi_encoder import BiEncoderReranker
    from autooptimizer.search.rerankers.cross_encoder import CrossEncoderReranker
    from autooptimizer.search.rerankers.ltr_fusion import LtrFusionReranker

Verdict = Literal["corpus_shift", "model_regression", "data_issue"]
SHIFT_RATIO = 1.5  # JSD above this multiple of the in-domain floor counts as a shift
OOV_SHIFT = 0.5  # or: half of the new queries' terms never occur in the training queries
DATA_ISSUE_SHARE = 0.2


class TokenAttribution(BaseModel):
    token: str
    value: float


class QueryExplanation(BaseModel):
    query_key: str
    query: str
    doc_id: str
    served_ndcg10: float | None
    score: float
    method: Literal["shap", "lime"]
    attributions: list[TokenAttribution]
    under_weighted: list[str]


class TermShift(BaseModel):
    jsd: float
    jsd_in_domain_floor: float
    oov_share: float
    new_top_terms: list[str]
    train_top_terms: list[str]


class DiagnosticReport(BaseModel):
    model_version: str
    explainer: Literal["shap", "lime"]
    queries: list[QueryExplanation]
    under_weighted_terms: list[tuple[str, int]]
    term_shift: TermShift
    feedback: dict[str, float]
    verdict: Verdict
    evidence: list[str]
    wall_seconds: float


def _tokens(text: str) -> list[str]:
    import re

    return [t for t in re.findall(r"[a-z][a-z0-9]+", text.lower()) if t not in _STOP]


_STOP_WORDS = (
    "a an and are as at be by for from has have how in is it its of on or that the this to was were what which who "
    "with why when where does do can there their these those than then also into about been any more most not no "
    "such other some our we you they them his her"
)
_STOP = frozenset(_STOP_WORDS.split())


def jsd(a: Counter, b: Counter) -> float:
    """Jensen-Shannon divergence (base 2) between two term-count distributions."""
    vocab = set(a) | set(b)
    na, nb = sum(a.values()) or 1, sum(b.values()) or 1
    out = 0.0
    for t in vocab:
        p, q = a.get(t, 0) / na, b.get(t, 0) / nb
        m = (p + q) / 2
        if p > 0:
            out += 0.5 * p * math.log2(p / m)
        if q > 0:
            out += 0.5 * q * math.log2(q / m)
    return round(out, 4)


def term_shift(new_queries: list[str], train_queries: list[str], seed: int = 0) -> TermShift:
    """JSD(new sample, training queries) against the floor JSD(training sample of the same size, rest of training):
    both compare n queries with a larger set, so sample size alone does not look like a shift."""
    new = Counter(t for q in new_queries for t in _tokens(q))
    train_list = list(train_queries)
    random.Random(seed).shuffle(train_list)
    train = Counter(t for q in train_list for t in _tokens(q))
    n = max(1, min(len(new_queries), len(train_list) // 2))
    sample = Counter(t for q in train_list[:n] for t in _tokens(q))
    rest = Counter(t for q in train_list[n:] for t in _tokens(q))
    oov = sum(c for t, c in new.items() if t not in train) / (sum(new.values()) or 1)
    return TermShift(jsd=jsd(new, train), jsd_in_domain_floor=jsd(sample, rest), oov_share=round(oov, 4),
                     new_top_terms=[t for t, _ in new.most_common(15)],
                     train_top_terms=[t for t, _ in train.most_common(15)])


class QueryDocScorer:
    """score(texts, doc_id) -> the model's query-document score for each (masked) query text."""

    def __init__(self, spec, collection) -> None:
        from autooptimizer.search.rerankers import build_reranker

        self.spec = spec
        self.collection = collection
        self.reranker = build_reranker(spec, collection)
        self.tokenizer_path = None

    def tokenizer(self):
        from transformers import AutoTokenizer

        from autooptimizer.search.encoder import base_model_path

        path = self.spec.resolved_encoder_path() if self.spec.kind in ("bi_encoder", "cross_encoder") else None
        return AutoTokenizer.from_pretrained(path or base_model_path())

    def __call__(self, texts: list[str], doc_id: str) -> np.ndarray:
        texts = [str(t) for t in texts]
        kind = self.spec.kind
        if kind == "cross_encoder":
            doc = self.collection.text(doc_id)
            ce = cast("CrossEncoderReranker", self.reranker)  # build_reranker made it from spec.kind
            return np.asarray(ce.model.predict([(t, doc) for t in texts], show_progress_bar=False),
                              dtype=np.float64).reshape(-1)
        if kind == "ltr_fusion":
            r = cast("LtrFusionReranker", self.reranker)
            d = r.matrix[self.collection.index_of[doc_id]]
            qv = r.encoder.encode(texts)
            route = r.route(qv[0]) if len(qv) else None  # the unmasked query is evaluated first by SHAP/LIME
            from autooptimizer.search.rerankers.ltr_fusion import adapt

            w = r.experts[route].w if route is not None else None
            return np.array([float(adapt(q, w) @ d) for q in qv])
        if kind == "bi_encoder":
            bi = cast("BiEncoderReranker", self.reranker)
            d = bi.doc_vectors([doc_id])[0]
            return np.asarray(bi.encoder.encode(texts) @ d, dtype=np.float64)
        raise InputError(f"Cannot explain reranker kind {kind!r}.",
                         "Explain a bi_encoder, cross_encoder or ltr_fusion model.")


def explain_shap(scorer: QueryDocScorer, query: str, doc_id: str, max_evals: int = 64) -> list[TokenAttribution]:
    import shap
    from shap.maskers import Text

    masker = Text(scorer.tokenizer())
    explainer = shap.Explainer(lambda xs: scorer(list(xs), doc_id), masker, silent=True)
    # shap's __call__ returns Explanation | list[Explanation]: a list only for several input datasets, one here
    evals = max(max_evals, 2 * len(query.split()) + 4)
    ex = cast("Explanation", explainer([query], max_evals=evals, silent=True))
    toks, vals = ex.data[0], ex.values[0]
    return [TokenAttribution(token=str(t).strip(), value=round(float(v), 6))
            for t, v in zip(toks, vals, strict=True) if str(t).strip()]


def explain_lime(scorer: QueryDocScorer, query: str, doc_id: str, num_samples: int = 200) -> list[TokenAttribution]:
    from lime.lime_text import LimeTextExplainer

    def proba(texts: list[str]) -> np.ndarray:
        p = 1.0 / (1.0 + np.exp(-10.0 * scorer(texts, doc_id)))
        return np.stack([1 - p, p], 1)

    explainer = LimeTextExplainer(class_names=["other", "relevant"], random_state=0)
    ex = explainer.explain_instance(query, proba, num_features=len(query.split()), num_samples=num_samples)
    return [TokenAttribution(token=t, value=round(float(v), 6)) for t, v in ex.as_list()]


def under_weighted(attrs: list[TokenAttribution], doc_text: str) -> list[str]:
    """Content terms shared with the relevant document whose attribution is below the mean attribution."""
    doc_terms = set(_tokens(doc_text))
    vals = [a.value for a in attrs]
    mean = float(np.mean(vals)) if vals else 0.0
    out = []
    for a in attrs:
        for t in _tokens(a.token):
            if t in doc_terms and a.value < mean and t not in out:
                out.append(t)
    return out


def diagnose(
    spec: ModelSpec,
    collection: Collection,
    dataset: Dataset,
    train_queries: list[str],
    n_queries: int = 3,
    explainer: Literal["shap", "lime"] = "shap",
    max_evals: int = 64,
    baseline_ndcg10: float | None = None,
    progress: Callable[[str, float], None] | None = None,
) -> DiagnosticReport:
    """Explain the worst-served queries of `dataset` (a loaded ml.dataset.Dataset) under `spec`."""
    t0 = time.perf_counter()
    say = progress or (lambda _m, _f: None)
    originals = [q for q in dataset.queries if q.augmented_from is None]
    if not originals:
        raise InputError("The dataset has no queries to diagnose.", "Build it from a non-empty feedback log.")
    qrels = dataset.qrels()
    missing = sum(1 for p in dataset.pairs if p.doc_id not in collection.index_of)
    no_pos = sum(1 for q in originals if not any(g > 0 for g in qrels.get(q.query_key, {}).values()))
    served = [q.served_ndcg10 for q in originals if q.served_ndcg10 is not None]
    fb = {"queries": float(len(originals)), "pairs": float(len(dataset.pairs)),
          "missing_doc_share": round(missing / max(len(dataset.pairs), 1), 4),
          "no_positive_share": round(no_pos / len(originals), 4),
          "served_ndcg10": round(float(np.mean(served)), 4) if served else float("nan")}
    shift = term_shift([q.text for q in originals], train_queries)

    scorer = QueryDocScorer(spec, collection)
    worst = sorted((q for q in originals if any(g > 0 for g in qrels.get(q.query_key, {}).values())),
                   key=lambda q: (q.served_ndcg10 if q.served_ndcg10 is not None else 1.0, q.query_key))[:n_queries]
    explained: list[QueryExplanation] = []
    for i, q in enumerate(worst):
        say(f"{explainer} on query {i + 1}/{len(worst)}", i / max(len(worst), 1))
        judged = qrels[q.query_key]
        doc = max((d for d in judged if d in collection.index_of and judged[d] > 0), key=lambda d: (judged[d], d),
                  default=None)
        if doc is None:
            continue
        fn = explain_shap if explainer == "shap" else explain_lime
        attrs = fn(scorer, q.text, doc, max_evals) if explainer == "shap" else fn(scorer, q.text, doc)
        explained.append(QueryExplanation(
            query_key=q.query_key, query=q.text, doc_id=doc, served_ndcg10=q.served_ndcg10,
            score=round(float(scorer([q.text], doc)[0]), 6), method=explainer, attributions=attrs,
            under_weighted=under_weighted(attrs, collection.text(doc))))
    uw = Counter(t for e in explained for t in e.under_weighted)

    evidence: list[str] = []
    if fb["missing_doc_share"] > DATA_ISSUE_SHARE or fb["no_positive_share"] > DATA_ISSUE_SHARE:
        verdict: Verdict = "data_issue"
        evidence.append(f"{fb['missing_doc_share']:.0%} of judged/served documents are not in the collection and "
                        f"{fb['no_positive_share']:.0%} of queries have no relevant judgment "
                        f"(threshold {DATA_ISSUE_SHARE:.0%})")
    elif shift.jsd > SHIFT_RATIO * shift.jsd_in_domain_floor or shift.oov_share >= OOV_SHIFT:
        verdict = "corpus_shift"
        evidence.append(f"query-term JSD vs training queries {shift.jsd:.3f} (in-domain floor "
                        f"{shift.jsd_in_domain_floor:.3f}, shift above {SHIFT_RATIO}x); {shift.oov_share:.0%} of "
                        f"query terms unseen in training (shift at {OOV_SHIFT:.0%})")
    else:
        verdict = "model_regression"
        evidence.append(f"query terms match training (JSD {shift.jsd:.3f} <= {SHIFT_RATIO} x floor "
                        f"{shift.jsd_in_domain_floor:.3f}, {shift.oov_share:.0%} unseen terms), so the model, not "
                        "the traffic, changed")
    if baseline_ndcg10 is not None and served:
        evidence.append(f"served nDCG@10 on this traffic {fb['served_ndcg10']:.3f} vs the model's original-domain "
                        f"{baseline_ndcg10:.3f}")
    if uw:
        evidence.append("terms the model under-weights: " + ", ".join(t for t, _ in uw.most_common(8)))
    return DiagnosticReport(
        model_version=spec.version, explainer=explainer, queries=explained, under_weighted_terms=uw.most_common(20),
        term_shift=shift, feedback=fb, verdict=verdict, evidence=evidence,
        wall_seconds=round(time.perf_counter() - t0, 1))


def write_report(report: DiagnosticReport, out_dir: str | Path) -> Path:
    p = Path(out_dir) / "diagnostic_report.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(report.model_dump_json(indent=2))
    return p
