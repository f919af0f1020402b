"""Unsupervised domain adaptation for a repair: what the new corpus teaches without any judgment (issue 18).

In a corpus shift every new document is there while judged queries are few (15-40 per repair), so the expert also
learns from the corpus itself. Each adaptation is switched by a field of `Adaptation` (TrainConfig.adaptation) and
recorded in the expert's params (`ExpertParams.adaptation`, plus the serving values it fixed: `bm25_k1`, `bm25_b`,
`rm3_idf`):

- `pseudo_queries`: N pseudo-queries cut from the corpus, each paired with the document it came from, added to the
  query adapter's training rows. Kinds: `ict` (inverse cloze: one sentence of the document), `crop` (a random span
  of 6-16 words), `terms` (the document's top tf-idf terms: a doc2query without a generator). Deterministic under
  the seed (`pseudo_queries`).
- `bm25_tune`: BM25's k1 and b chosen per domain by the mean reciprocal rank of each ICT pseudo-query's source
  document, the sentence removed from it first (as in the inverse cloze task, else the query matches itself); served
  as the `bm25_tuned` feature over the same first-stage candidates, so the parent's fusion stays the baseline.
- `rm3_idf`: RM3's expansion terms weighted by the corpus' inverse document frequency, a corpus-level term
  statistic (the plain relevance model favours terms that are frequent everywhere).
- `dense_candidates`: a hybrid first stage. The expert reranks BM25's candidates plus the k documents of the new
  corpus nearest to the query by the base encoder's cosine (its corpus embeddings are cached anyway), so a relevant
  document that shares no word with the query can be found; a corpus shift brings vocabulary BM25 has not seen in the
  queries' words. Needs no judgment; the expert's fit and its CV gate see the extended candidates. With
  `dense_gate` the judged feedback decides whether to use it at all: only when the encoder alone ranks the new corpus
  at least as well as BM25 does (round D: it helped npl, where they are level, and hurt lisa, where MiniLM is far
  below BM25).
- `unjudged`: queries of the shifted traffic that carry no judgment (the live log, or a domain's unjudged queries
  offline) join the domain gate's positives and the adapter's rows with pseudo-relevance targets (the parent's top
  documents).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, field_validator, model_validator

K1_GRID = (0.6, 0.9, 1.2, 1.5, 2.0)
B_GRID = (0.3, 0.5, 0.75, 0.9)
_SENT = re.compile(r"(?<=[.!?;])\s+")
_WORD = re.compile(r"\S+")


class Adaptation(BaseModel):
    """Which unsupervised adaptations a training uses (each off by default unless measured to help). The ltr trainer
    takes every field; the neural trainers take ict/crop `pseudo_queries` only (in-domain pairs for their contrastive
    or listwise loss; `TrainConfig` refuses the rest for them). Unknown fields are refused: a misspelt switch would
    otherwise train with the defaults."""

    model_config = ConfigDict(extra="forbid")
    pseudo_queries: int = Field(default=0, ge=0, le=5000, description="corpus pseudo-queries for the adapter")
    pseudo_kind: Literal["ict", "crop", "terms"] = "ict"
    bm25_tune: bool = Field(default=False, description="k1, b tuned on ICT pseudo-queries (`bm25_tuned` feature)")
    bm25_tune_queries: int = Field(default=300, ge=20, le=5000)
    rm3_idf: bool = Field(default=False, description="RM3 expansion terms weighted by corpus idf")
    unjudged: bool = Field(default=False, description="unjudged domain queries: gate positives, PRF adapter rows")
    dense_candidates: int = Field(
        default=0, ge=0, le=1000,
        description="hybrid first stage: the k documents of the new corpus nearest to the query by base cosine join "
        "BM25's candidates, in training and serving (more recall; no new feature)")
    dense_gate: bool = Field(
        default=False,
        description="add the dense candidates only when the encoder's nearest 10 reach at least BM25's top-10 "
        "nDCG@10 in the new corpus on the feedback queries (ml.ltr.first_stage_ndcg)")
    prior: dict[str, StrictFloat] = Field(
        default_factory=dict,
        description="feature weights added to the parent's fusion as the weight fit's start and shrinkage target (an "
        "unsupervised prior such as pseudo-relevance: {'rm3': 0.25}); the CV gate still compares with the parent")

    @field_validator("prior")
    @classmethod
    def _known_features(cls, v: dict[str, float]) -> dict[str, float]:
        from autooptimizer.search.rerankers.ltr_fusion import FEATURES

        unknown = sorted(set(v) - set(FEATURES))
        if unknown:
            raise ValueError(f"prior names unknown feature(s) {unknown}; use any of {list(FEATURES)}")
        if not all(math.isfinite(x) for x in v.values()):
            raise ValueError(f"prior weights must be finite numbers, got {v}")
        return v

    @model_validator(mode="after")
    def _prior_on_a_computed_feature(self) -> Adaptation:
        if self.prior.get("bm25_tuned") and not self.bm25_tune:
            raise ValueError("prior weighs bm25_tuned, which is 0 unless bm25_tune=True; set bm25_tune=True or drop it")
        return self

    @model_validator(mode="after")
    def _gate_on_something(self) -> Adaptation:
        if self.dense_gate and not self.dense_candidates:
            raise ValueError("dense_gate decides whether to use dense candidates, and dense_candidates is 0; set "
                             "dense_candidates=k (e.g. 100) or drop dense_gate")
        return self


# What training uses (TrainConfig.adaptation). Chosen on the develop domains only (cran, cisi, med; dev seeds 100-101;
# docs/benchmarks.md, Repair: leave-one-domain-out): BM25 tuning was the only one not worse on average (+0.002, within
# noise) and was the default for the confirm runs (commits 45a80a1, f2f2bc0); it is off again because its feature
# raised the expert's serving CPU (tiny console world: 1.2x -> 3.3x the champion's, past the promotion rule's 1.2x)
# for no demonstrated gain. ICT pseudo-queries (-0.007), idf-weighted RM3 (-0.004) and unjudged-query PRF rows (cisi
# -0.018) were worse. Ten develop seeds per domain (session 6) agree: no pseudo-query kind or count, no prior, and
# not tuned BM25 beats none (docs/benchmarks.md, Develop, ten seeds per domain). Dense candidates gated by the
# feedback (rounds D-F) gained +0.0025 on the develop domains and +0.003 / -0.001 on npl over paired plain repairs,
# and their serving cost (1.21-1.26x on npl, budget 1.2x) refused 8 of 9 promotions the plain repair made (round F).
# All stay switchable.
DEFAULT = Adaptation()

# Named variants for `autoopt bench study` (docs/benchmarks.md, Repair: leave-one-domain-out).
VARIANTS: dict[str, Adaptation] = {
    "none": Adaptation(),
    "pq_ict": Adaptation(pseudo_queries=300, pseudo_kind="ict"),
    "pq_crop": Adaptation(pseudo_queries=300, pseudo_kind="crop"),
    "pq_terms": Adaptation(pseudo_queries=300, pseudo_kind="terms"),
    "pq_ict100": Adaptation(pseudo_queries=100, pseudo_kind="ict"),
    "pq_crop100": Adaptation(pseudo_queries=100, pseudo_kind="crop"),
    "pq_terms100": Adaptation(pseudo_queries=100, pseudo_kind="terms"),
    # for the neural trainers on a GPU (2,000 pairs is ~125 bi-encoder steps at batch 16)
    "pq_crop2000": Adaptation(pseudo_queries=2000, pseudo_kind="crop"),
    "pq_ict2000": Adaptation(pseudo_queries=2000, pseudo_kind="ict"),
    "prior_rm3": Adaptation(prior={"rm3": 0.25}),
    "prior_prf": Adaptation(prior={"rm3": 0.25, "dense_prf": 0.25}),
    "prior_nn": Adaptation(prior={"rm3": 0.25, "dense_prf": 0.25, "bm25_nn": 0.15, "cos_nn": 0.15}),
    "bm25": Adaptation(bm25_tune=True),
    "rm3idf": Adaptation(rm3_idf=True),
    "unjudged": Adaptation(unjudged=True),
    "dense25": Adaptation(dense_candidates=25),
    "dense50": Adaptation(dense_candidates=50),
    "dense100": Adaptation(dense_candidates=100),
    "dense100_gated": Adaptation(dense_candidates=100, dense_gate=True),
}


def variants(names: list[str]) -> dict[str, Adaptation]:
    """The named adaptations in order (`default`: what training uses now, `DEFAULT`), each a copy. Raises one
    InputError naming every unknown name (or that none was named) and the choices."""
    from autooptimizer.errors import InputError

    table = {**VARIANTS, "default": DEFAULT}
    unknown = [n for n in names if n not in table]
    if not names:
        raise InputError("No adaptation named.", f"Name one or more of {sorted(table)}.")
    if unknown:
        plural = "s" if len(unknown) > 1 else ""
        raise InputError(f"Unknown adaptation{plural} {', '.join(repr(n) for n in unknown)}.",
                         f"Use some of {sorted(table)}.")
    return {n: table[n].model_copy(deep=True) for n in names}


def variant(name: str) -> Adaptation:
    """The named adaptation (see `variants`)."""
    return variants([name])[name]


def sentences(text: str, min_words: int = 4) -> list[str]:
    """The text's sentences with at least `min_words` words."""
    return [s.strip() for s in _SENT.split(text) if len(_WORD.findall(s)) >= min_words]


def _ict(text: str, rng: np.random.Generator) -> str | None:
    sents = sentences(text)
    if len(sents) < 2:
        return None
    words = sents[int(rng.integers(len(sents)))].split()
    return " ".join(words[:24])


def _crop(text: str, rng: np.random.Generator) -> str | None:
    words = text.split()
    if len(words) < 12:
        return None
    n = int(rng.integers(6, 17))
    start = int(rng.integers(0, max(1, len(words) - n)))
    return " ".join(words[start:start + n])


def _terms(tokens: list[str], df: Callable[[str], int], n_docs: int, k: int = 6) -> str | None:
    """Top-k terms by tf-idf (stemmed vocabulary terms; BM25 and MiniLM both read them well enough)."""
    if len(set(tokens)) < 3:
        return None
    tf: dict[str, int] = {}
    for t in tokens:
        tf[t] = tf.get(t, 0) + 1
    score = {t: c * math.log(n_docs / max(df(t), 1)) for t, c in tf.items()}
    return " ".join(sorted(score, key=lambda t: (-score[t], t))[:k])


def pseudo_queries(doc_ids: list[str], text: Callable[[str], str], n: int, seed: int, kind: str = "ict",
                   tokenize: Callable[[str], list[str]] | None = None, df: Callable[[str], int] | None = None
                   ) -> list[tuple[str, str]]:
    """`n` (source doc id, pseudo-query) pairs from distinct documents drawn by `seed` (same seed, same list).
    Documents too short for the kind are skipped; fewer than `n` pairs come back when the corpus runs out.
    `terms` needs `tokenize` and `df` (the BM25 index's)."""
    if kind == "terms" and (tokenize is None or df is None):
        raise ValueError("pseudo-query kind 'terms' needs tokenize and df")
    rng = np.random.default_rng(seed)
    out: list[tuple[str, str]] = []
    for i in rng.permutation(len(doc_ids)):
        if len(out) >= n:
            break
        d = doc_ids[int(i)]
        if kind == "ict":
            q = _ict(text(d), rng)
        elif kind == "crop":
            q = _crop(text(d), rng)
        else:
            assert tokenize is not None and df is not None
            q = _terms(tokenize(text(d)), df, len(doc_ids))
        if q:
            out.append((d, q))
    return out


class TermMatrix:
    """Term counts of a corpus (documents x vocabulary, scipy CSC) for scoring BM25 with any k1, b."""

    def __init__(self, rm3, doc_ids: list[str], text: Callable[[str], str]) -> None:
        from scipy.sparse import csc_matrix

        rows, cols, vals, lengths = [], [], [], []
        for r, d in enumerate(doc_ids):
            ids, tfs, length = rm3.doc_terms(d, text(d))
            rows.extend([r] * len(ids))
            cols.extend(ids.tolist())
            vals.extend(tfs.tolist())
            lengths.append(length)
        self.tf = csc_matrix((vals, (rows, cols)), shape=(len(doc_ids), len(rm3.term_of)))
        self.length = np.asarray(lengths, dtype=np.float64)
        self.avgdl = float(self.length.mean()) if len(lengths) else 1.0
        self.row = {d: i for i, d in enumerate(doc_ids)}
        self.n_docs = int(rm3.n_docs)
        self.df = rm3.df_by_id

    def idf(self, term_ids: np.ndarray) -> np.ndarray:
        df = self.df[term_ids].astype(np.float64)
        return np.log(1.0 + (self.n_docs - df + 0.5) / (df + 0.5))  # Lucene's, as bm25s's default


def ict_mrr(tm: TermMatrix, queries: list[tuple[int, np.ndarray, np.ndarray]], k1: float, b: float) -> float:
    """Mean reciprocal rank of each query's source document (row, query term ids, their counts), its own sentence
    taken out of it first."""
    rr = []
    for row, ids, cnt in queries:
        tf = tm.tf[:, ids].toarray()
        length = tm.length.copy()
        tf[row] = np.maximum(tf[row] - cnt, 0)
        length[row] = max(length[row] - cnt.sum(), 1.0)
        norm = k1 * (1 - b + b * length / tm.avgdl)
        s = (tm.idf(ids) * tf * (k1 + 1) / (tf + norm[:, None])).sum(1)
        rr.append(1.0 / (1 + int((s > s[row]).sum())))
    return float(np.mean(rr)) if rr else 0.0


def tune_bm25(rm3, doc_ids: list[str], text: Callable[[str], str], n: int, seed: int
              ) -> tuple[float, float, float, dict[str, float]]:
    """(k1, b, avgdl, MRR per grid point "k1/b") chosen on ICT pseudo-queries of the corpus."""
    tm = TermMatrix(rm3, doc_ids, text)
    queries = []
    for d, q in pseudo_queries(doc_ids, text, n, seed, "ict"):
        toks = rm3.bm25.tokenize(q)
        if not toks:
            continue
        vocab = rm3.bm25.vocab
        uniq, cnt = np.unique(np.array([vocab[t] for t in toks], dtype=np.int64), return_counts=True)
        queries.append((tm.row[d], uniq, cnt.astype(np.float64)))
    table = {f"{k1:g}/{b:g}": round(ict_mrr(tm, queries, k1, b), 4) for k1 in K1_GRID for b in B_GRID}
    best = max(table, key=lambda key: (table[key], key == "1.5/0.75"))  # ties: bm25s's defaults
    k1, b = (float(x) for x in best.split("/"))
    return k1, b, tm.avgdl, table
