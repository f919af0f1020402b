"""Fit one `ltr_fusion` expert on a domain's feedback: a query adapter (torch) and linear feature weights.

Why this and not only encoder fine-tuning: on this CPU, a few minutes of MiniLM fine-tuning moves held-out NDCG by
less than 0.01, while the fused BM25 + MiniLM champion leaves signal unused that a small model can learn from a
hundred judged queries: a query-side adapter over the cached document embeddings, pseudo-relevance feedback (dense and
RM3), the judgments of similar past queries, and the cluster hypothesis (a candidate whose nearest fellow candidates
score well is likely relevant). The document embeddings stay the champion's, so nothing is re-encoded.

Stacking: the adapter used for a training query's features never saw that query (K-fold, out-of-fold), and the memory
feature leaves the query itself out, so the linear weights are fitted on features that behave like held-out ones.
The adapter's epoch count is early-stopped on a dev slice, scored the way the adapter is used (fused with BM25).
The weights are the mean of two fits that start at the parent's fusion (so "no change" is the baseline): a linear
ListNet pulled toward it, and coordinate ascent on NDCG@10 averaged over bootstrap resamples of the queries (bagging)
and shrunk halfway back. Repeated k-fold CV on the feedback queries (`select_weights`, folds grouped by relevance
overlap) scores them and keeps the parent's ranking (a disabled expert) only where the feedback shows the expert
hurts. Held-out queries are never seen by any of this.
A class-balanced logistic regression on query embeddings (this domain vs the original domain's training queries and
earlier experts) is the expert's gate.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
from pydantic import BaseModel

from autooptimizer.errors import InputError
from autooptimizer.ml.adapt import Adaptation, pseudo_queries, tune_bm25
from autooptimizer.search.rerankers.ltr_fusion import (
    FEATURES,
    Expert,
    ExpertParams,
    FirstStage,
    Rm3,
    adapt,
    expert_features,
    own_rows,
    zscore,
)

Progress = Callable[[str, float], None]
CA_GRID = (-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0, 1.5, 2.0)


class AdapterConfig(BaseModel):
    l2: float = 1e-2
    lr: float = 1e-2
    max_epochs: int = 300
    eval_every: int = 10
    patience: int = 5
    tau: float = 0.05
    dev_fraction: float = 0.2


class Selection(BaseModel):
    """What cross-validation on the feedback chose, with the evidence."""

    selected: str
    enabled: bool
    cv_ndcg10: dict[str, float]
    cv_gain: float
    cv_gain_se: float
    folds: int
    repeats: int
    groups: int = 0
    repeats_won: int = 0


class LtrFitReport(BaseModel):
    train_queries: int
    augmented_queries: int
    folds: int
    adapter_epochs: int
    adapter_dev_ndcg10: float
    adapter_dev_ndcg10_base: float
    oof_ndcg10_parent: float
    oof_ndcg10_fitted: float
    weights: dict[str, float]
    selection: Selection
    loss_curve: list[float]
    wall_seconds: float


def ndcg10(scores: np.ndarray, gains: np.ndarray, ideal: np.ndarray) -> float:
    """nDCG@10 of the candidates ranked by `scores`: the definition of `search.metrics_eval` (linear gain, negative
    grades as 0), computed here on arrays because training evaluates it thousands of times per fit (`Packed.ndcg` is
    the batched form). `gains[i]` is candidate i's grade (candidates are distinct documents); `ideal` = all positive
    grades of the query, retrieved or not. Equal scores keep candidate order (stable sort), where trec_eval orders
    them by document id; 0.0 where metrics_eval says None (nothing relevant). Agreement: tests/test_ml_ltr.py."""
    order = np.argsort(-scores, kind="stable")[:10]
    disc = 1.0 / np.log2(np.arange(2, 12))
    dcg = float((np.maximum(gains[order], 0) * disc[: len(order)]).sum())
    top = np.sort(np.maximum(ideal, 0))[::-1][:10]
    idcg = float((top * disc[: len(top)]).sum())
    return dcg / idcg if idcg > 0 else 0.0


def train_adapter(
    q_train: np.ndarray,
    y_train: np.ndarray,
    docs: np.ndarray,
    cfg: AdapterConfig,
    seed: int,
    dev_fn: Callable[[np.ndarray | None], float] | None = None,
    epochs: int | None = None,
    threads: int = 1,
) -> tuple[np.ndarray, int, float, list[float]]:
    """Train W (dim x dim) for q' = norm(q + qW): listwise softmax over all docs, grades as target mass, L2 on W.

    With `dev_fn(W) -> dev nDCG@10`: early stopping on it (patience in evaluations); returns (W, best epoch count,
    best dev nDCG, loss curve). Without: exactly `epochs` epochs. NaN loss -> InputError.
    """
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    d = torch.tensor(docs, dtype=torch.float32)
    q = torch.tensor(q_train, dtype=torch.float32)
    y = torch.tensor(y_train, dtype=torch.float32)
    y = y / y.sum(1, keepdim=True).clamp_min(1e-9)
    w = torch.zeros(d.shape[1], d.shape[1], requires_grad=True)
    opt = torch.optim.Adam([w], lr=cfg.lr)
    n_epochs = epochs if epochs is not None else cfg.max_epochs
    best_w, best_ep, best_dev, bad, curve = w.detach().clone(), 0, -1.0, 0, []
    if dev_fn is not None:
        best_dev = dev_fn(None)
    for ep in range(1, n_epochs + 1):
        qa = torch.nn.functional.normalize(q + q @ w, dim=1)
        logp = torch.log_softmax(qa @ d.T / cfg.tau, dim=1)
        loss = -(y * logp).sum(1).mean() + cfg.l2 * (w**2).sum()
        if not torch.isfinite(loss):
            raise InputError(f"Adapter loss became {loss.item()} at epoch {ep}.",
                             "Lower the learning rate or check the dataset for empty queries; nothing was saved.")
        opt.zero_grad()
        loss.backward()
        opt.step()
        curve.append(round(float(loss.item()), 5))
        if dev_fn is not None and ep % cfg.eval_every == 0:
            dev = dev_fn(w.detach().numpy())
            if dev > best_dev + 1e-4:
                best_w, best_ep, best_dev, bad = w.detach().clone(), ep, dev, 0
            else:
                bad += 1
                if bad >= cfg.patience:
                    break
    if dev_fn is None:
        best_w, best_ep = w.detach().clone(), n_epochs
    return best_w.numpy().astype(np.float32), best_ep, best_dev, curve


def served_parent_ndcg(bm25: list[np.ndarray], cos: list[np.ndarray], gains: list[np.ndarray],
                       ideals: list[np.ndarray], weight: float, depth: int | None) -> np.ndarray:
    """Per-query nDCG@10 of the parent exactly as it serves (search/pipeline.py): the first `depth` of BM25's
    candidates (pass BM25's only, in its order: no dense extension), fused as (1 - weight) z(BM25) + weight
    z(cosine), z-scores over those candidates only. Lists are per query: raw BM25 scores, raw cosines, grades.
    Exact for a parent reranking with the base encoder's cosine (bootstrap's bi_encoder); a fine-tuned or
    cross-encoder parent is only approximated by the base cosines callers pass.

    An expert's features are z-scored over all of its candidates (deeper than the parent's, plus any dense
    extension), so the parent's weights applied to them rank differently: about 0.003 nDCG@10 at depth 100, up to
    0.02 with 50 dense candidates (cisi, seed 100)."""
    from autooptimizer.search.pipeline import fuse

    out = []
    for b, c, g, i in zip(bm25, cos, gains, ideals, strict=True):
        d = len(b) if depth is None else min(depth, len(b))
        out.append(ndcg10(fuse(b[:d], c[:d], weight), g[:d], i))
    return np.array(out, dtype=np.float64)


class Packed:
    """Per-query candidate features padded to one array, so a weight vector's nDCG@10 on many queries is one sort."""

    def __init__(self, feats: list[np.ndarray], gains: list[np.ndarray], ideals: list[np.ndarray]) -> None:
        n, m = len(feats), max((len(x) for x in feats), default=1) or 1
        nf = feats[0].shape[1] if feats else len(FEATURES)
        self.x = np.zeros((n, m, nf))
        self.g = np.zeros((n, m))
        self.mask = np.zeros((n, m), dtype=bool)
        for i, (x, g) in enumerate(zip(feats, gains, strict=True)):
            self.x[i, : len(x)], self.g[i, : len(g)], self.mask[i, : len(x)] = x, np.maximum(g, 0), True
        disc = 1.0 / np.log2(np.arange(2, 12))
        self.disc = disc
        self.idcg = np.array([float((np.sort(np.maximum(i, 0))[::-1][:10] * disc[: min(10, len(i))]).sum())
                              for i in ideals])

    def __len__(self) -> int:
        return len(self.idcg)

    def ndcg(self, w: np.ndarray, idx: np.ndarray | None = None, depth: int | None = None) -> np.ndarray:
        """Per-query nDCG@10 of the linear scores x @ w (rows `idx`, default all); same as `ndcg10` per query.
        With `depth`, only the first `depth` candidates (first-stage order) are reranked, as a shallower parent does."""
        x, g, mask, idcg = (self.x, self.g, self.mask, self.idcg) if idx is None else \
            (self.x[idx], self.g[idx], self.mask[idx], self.idcg[idx])
        if depth is not None and depth < mask.shape[1]:
            mask = mask.copy()
            mask[:, depth:] = False
        s = np.where(mask, x @ w, -np.inf)
        top = np.argsort(-s, axis=1, kind="stable")[:, :10]
        dcg = (np.take_along_axis(g, top, 1) * self.disc[: top.shape[1]]).sum(1)
        return np.divide(dcg, idcg, out=np.zeros_like(dcg), where=idcg > 0)


def coordinate_ascent(p: Packed, idx: np.ndarray, w0: np.ndarray, free: tuple[int, ...] | None = None,
                      rounds: int = 3, min_gain: float = 1e-3) -> tuple[np.ndarray, float]:
    """Maximise mean nDCG@10 over queries `idx`, one free weight at a time over CA_GRID; a move must gain `min_gain`
    (keeps it simple). Weights outside `free` stay at w0."""
    free = tuple(range(len(w0))) if free is None else free
    w, best = w0.copy(), float(p.ndcg(w0, idx).mean())
    for _ in range(rounds):
        improved = False
        for j in free:
            for v in CA_GRID:
                if v == w[j]:
                    continue
                cand = w.copy()
                cand[j] = v
                if not np.any(cand):
                    continue
                s = float(p.ndcg(cand, idx).mean())
                if s > best + min_gain:
                    best, w, improved = s, cand, True
        if not improved:
            break
    return w, best


def bagged_coordinate_ascent(p: Packed, idx: np.ndarray, w0: np.ndarray, bags: int, seed: int,
                             free: tuple[int, ...] | None = None) -> np.ndarray:
    """Mean of coordinate-ascent weights fitted on bootstrap resamples of the queries `idx`: with a few dozen queries
    one fit chases noise; the average keeps only moves most resamples agree on."""
    if bags <= 1:
        return coordinate_ascent(p, idx, w0, free)[0]
    rng = np.random.default_rng(seed)
    return np.mean([coordinate_ascent(p, idx[rng.integers(0, len(idx), len(idx))], w0, free)[0]
                    for _ in range(bags)], axis=0)


def listnet(p: Packed, idx: np.ndarray, w0: np.ndarray, l2: float) -> np.ndarray:
    """Linear ListNet (top-1 softmax cross-entropy against the grade distribution) with an L2 pull toward w0, by
    L-BFGS: a smooth, stable alternative to coordinate ascent (one weight per feature, so it takes milliseconds)."""
    from scipy.optimize import minimize

    x, g, mask = p.x[idx], p.g[idx], p.mask[idx]
    keep = g.sum(1) > 0
    x, g, mask = x[keep], g[keep], mask[keep]
    if not len(x):
        return w0.copy()
    t = g / g.sum(1, keepdims=True)

    return minimize(listnet_objective, w0.copy(), args=(x, t, mask, w0, l2), jac=True, method="L-BFGS-B",
                    options={"maxiter": 200}).x


def listnet_objective(w: np.ndarray, x: np.ndarray, t: np.ndarray, mask: np.ndarray, w0: np.ndarray,
                      l2: float) -> tuple[float, np.ndarray]:
    """(loss, gradient): mean over queries of -sum t log softmax(x w) over real candidates, + l2 |w - w0|^2."""
    s = np.where(mask, x @ w, -np.inf)
    s = s - s.max(1, keepdims=True)
    e = np.exp(s)
    z = e.sum(1, keepdims=True)
    logp = np.where(mask, s - np.log(z), 0.0)
    loss = -(t * logp).sum(1).mean() + l2 * float(((w - w0) ** 2).sum())
    grad = np.einsum("qd,qdf->f", e / z - t, x) / len(x) + 2 * l2 * (w - w0)
    return float(loss), grad


# The expert's weights: the mean of two fits from the parent's fusion with different biases, a linear ListNet pulled
# toward it (smooth, uses every candidate) and bagged coordinate ascent on nDCG@10 shrunk halfway back to it (direct,
# coarse). Fixed in advance, not chosen per domain: picking the best of a dozen such candidates by CV on 15-38
# feedback queries chased noise (the winner's curse; docs/benchmarks.md, session 3), averaging two does not.
LISTNET_L2 = 0.01
SHRINKAGE = 0.5
HARM_SE = 1.0
LISTNET = f"listnet@{LISTNET_L2:g}"
ASCENT = f"ascent@{SHRINKAGE:g}"
BLEND = "blend"
PARENT = "parent"


def blend_weights(p: Packed, idx: np.ndarray, w0: np.ndarray, bags: int, seed: int) -> dict[str, np.ndarray]:
    """The two member fits on queries `idx` and their mean (`BLEND`), keyed by label."""
    w_ln = listnet(p, idx, w0, LISTNET_L2)
    w_ca = w0 + SHRINKAGE * (bagged_coordinate_ascent(p, idx, w0, bags, seed) - w0)
    return {LISTNET: w_ln, ASCENT: w_ca, BLEND: 0.5 * (w_ln + w_ca)}


def relevance_groups(rel_docs: list[list[str]], min_jaccard: float = 0.1) -> np.ndarray:
    """Group id per query: connected components of "shares relevant documents" (Jaccard of the judged-relevant
    sets >= `min_jaccard`; any overlap at all chains all of cisi into one group). Queries in one group are
    near-duplicates for ranking purposes (cisi has clusters with Jaccard up to 0.83), so CV must not put them on
    both sides of a fold."""
    n = len(rel_docs)
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    sets = [set(d) for d in rel_docs]
    for i in range(n):
        for j in range(i + 1, n):
            if sets[i] and sets[j] and len(sets[i] & sets[j]) / len(sets[i] | sets[j]) >= min_jaccard:
                parent[root(i)] = root(j)
    roots = [root(i) for i in range(n)]
    ids = {r: k for k, r in enumerate(dict.fromkeys(roots))}
    return np.array([ids[r] for r in roots], dtype=np.int64)


def grouped_folds(groups: np.ndarray, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    """k folds of query indices with every group inside one fold; groups in random order, each to the currently
    smallest fold (so fold sizes stay balanced)."""
    uniq = rng.permutation(np.unique(groups))
    members = {g: np.flatnonzero(groups == g) for g in uniq}
    folds: list[list[int]] = [[] for _ in range(k)]
    for g in sorted(uniq, key=lambda g: -len(members[g])):  # stable: ties keep the random order
        min(folds, key=len).extend(members[g].tolist())
    return [np.array(sorted(f), dtype=np.int64) for f in folds if f]


def select_weights(p: Packed, w0: np.ndarray, bags: int, seed: int, folds: int = 5, repeats: int = 3,
                   harm_se: float = HARM_SE, deadline: float | None = None,
                   groups: np.ndarray | None = None, parent_depth: int | None = None,
                   base: np.ndarray | None = None, parent: np.ndarray | None = None) -> tuple[np.ndarray, Selection]:
    """The expert's weights (`blend_weights` on every feedback query), or the parent's when the feedback shows harm.

    Repeated k-fold CV on the feedback queries (out-of-fold features; folds keep each of `groups`, e.g.
    `relevance_groups`, whole) scores the blend and its two members against the parent's fusion at the parent's own
    `parent_depth` (what it really serves). The expert is disabled (the parent's ranking serves the domain) when the
    blend's mean paired CV gain is more than `harm_se` standard errors below zero. Why not demand a significant gain:
    with a few dozen queries the CV gain is mostly noise, and in the repair's split (one fixed pool of judged queries,
    half feedback, half held out) it even anti-correlates with the held-out gain (r = -0.72 on med and cran), so a
    stricter gate discards exactly the splits where the expert helps most. Promotion still needs the held-out
    evaluation (and A/B in staging), which is where a challenger that gains nothing is stopped. `base` is the
    parent's fusion when the fits start from a prior `w0` (Adaptation.prior); default `w0`. `parent` is the parent's
    per-query nDCG@10 as it serves (`served_parent_ndcg`); default: `base` on `p` at `parent_depth`."""
    base = w0 if base is None else base
    n = len(p)
    rng = np.random.default_rng(seed + 7919)
    acc = {lab: np.zeros((repeats, n)) for lab in (LISTNET, ASCENT, BLEND)}
    parent = p.ndcg(base, depth=parent_depth) if parent is None else np.asarray(parent, dtype=np.float64)
    groups = np.arange(n) if groups is None else np.asarray(groups)
    k = max(2, min(folds, len(np.unique(groups))))
    for r in range(repeats):
        for f, held in enumerate(grouped_folds(groups, k, rng)):
            train = np.setdiff1d(np.arange(n), held)
            for lab, w in blend_weights(p, train, w0, bags, seed + 1000 * r + f).items():
                acc[lab][r, held] = p.ndcg(w, held)
            _check_deadline(deadline)
    cv = {lab: v.mean(0) for lab, v in acc.items()}
    d = cv[BLEND] - parent
    gain, se = float(d.mean()), float(d.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0
    wins = int(((acc[BLEND] - parent).mean(1) > 0).sum())
    enabled = gain >= -harm_se * se
    table = {PARENT: round(float(parent.mean()), 4), **{lab: round(float(v.mean()), 4) for lab, v in cv.items()}}
    sel = Selection(selected=BLEND if enabled else PARENT, enabled=enabled, cv_ndcg10=table, cv_gain=round(gain, 4),
                    cv_gain_se=round(se, 4), folds=k, repeats=repeats,
                    groups=len(np.unique(groups)), repeats_won=wins)
    if not enabled:
        return base.copy(), sel
    return blend_weights(p, np.arange(n), w0, bags, seed)[BLEND], sel


def fit_expert(
    name: str,
    queries: dict[str, str],
    qrels: dict[str, dict[str, int]],
    collection,
    parent_fusion_weight: float,
    seed: int = 0,
    depth: int = 100,
    folds: int = 5,
    augmented: list[tuple[str, str]] | None = None,
    cfg: AdapterConfig | None = None,
    threads: int = 1,
    progress: Progress | None = None,
    deadline: float | None = None,
    gate_negatives: np.ndarray | None = None,
    bags: int = 0,
    parent_depth: int | None = None,
    domains: list[str] | None = None,
    adaptation: Adaptation | None = None,
    unjudged: list[str] | None = None,
    max_seq_length: int = 256,
) -> tuple[ExpertParams, dict[str, np.ndarray], LtrFitReport]:
    """Fit an expert on judged feedback queries (collection doc ids in `qrels`).

    `augmented` adds (source query id, noisy query text) rows to the adapter's training set only.
    `gate_negatives` are the query embeddings the domain gate must not claim (original domain, earlier experts).
    `parent_depth` is how deep the parent reranks: its baseline in model selection is scored at that depth.
    `domains` are the corpora the expert owns (routing by provenance; see ltr_fusion), empty for a shift inside the
    original corpus.
    `adaptation` switches the unsupervised adaptations (ml/adapt.py); `unjudged` are query texts of the domain's
    traffic without judgments (used only when `adaptation.unjudged`).
    `max_seq_length` is the base encoder's truncation: the parent's (`encoder.base_max_seq_length`), so the corpus
    is embedded once for both.
    Returns (params, arrays for the expert npz, report)."""
    from autooptimizer.search.embeddings import doc_embeddings
    from autooptimizer.search.encoder import get_encoder
    from autooptimizer.search.pipeline import get_bm25

    t0 = time.perf_counter()
    cfg = cfg or AdapterConfig()
    say = progress or (lambda _m, _f: None)
    qids = [q for q in sorted(queries) if any(g > 0 for g in qrels.get(q, {}).values())]
    if gate_negatives is None:
        gate_negatives = np.zeros((0, 1), dtype=np.float32)
    if len(qids) < 4:
        raise InputError(f"Only {len(qids)} feedback queries have a relevant judgment; an expert needs at least 4.",
                         "Collect more feedback for the new domain before training.")
    rng = np.random.default_rng(seed)
    encoder = get_encoder(None, max_seq_length)
    say("embedding corpus (cached)", 0.0)
    docs = doc_embeddings(collection, encoder, progress=False)
    qvec = encoder.encode([queries[q] for q in qids])
    row_of = collection.index_of
    y = np.zeros((len(qids), len(collection)), dtype=np.float32)
    for i, q in enumerate(qids):
        for d, g in qrels[q].items():
            if g > 0 and d in row_of:
                y[i, row_of[d]] = g
    aug = [(s, t) for s, t in (augmented or []) if s in qids and t.strip()]
    aug_vec = encoder.encode([t for _, t in aug]) if aug else np.zeros((0, qvec.shape[1]), dtype=np.float32)
    aug_src = np.array([qids.index(s) for s, _ in aug], dtype=np.int64)

    bm25 = get_bm25(collection)
    rm3 = Rm3(bm25)
    mem_docs = [[d for d, g in qrels[q].items() if g > 0 and d in row_of] for q in qids]
    ad = adaptation or Adaptation()
    own_idx = own_rows(collection, list(domains or []))  # the domain's corpus
    own = [collection.doc_ids[i] for i in own_idx]
    chosen: dict = {"settings": ad.model_dump()}
    k1, b, avgdl = None, 0.75, 1.0
    if ad.bm25_tune:
        say("BM25 k1, b on corpus pseudo-queries", 0.05)
        k1, b, avgdl, table = tune_bm25(rm3, own, collection.text, ad.bm25_tune_queries, seed)
        chosen["bm25"] = {"k1": k1, "b": b, "avgdl": round(avgdl, 2), "ict_mrr": table}
    probe = ExpertParams(name=name, file="", weights={}, mem_docs=mem_docs, domains=list(domains or []),
                         bm25_k1=k1, bm25_b=b, bm25_avgdl=avgdl, rm3_idf=ad.rm3_idf,
                         dense_candidates=ad.dense_candidates,
                         dense_corpora=sorted({d.split("/", 1)[0] for d in own}) if ad.dense_candidates and not domains
                         else [])
    ideals = [np.array([g for g in qrels[q].values() if g > 0], dtype=np.float64) for q in qids]
    if ad.dense_candidates and ad.dense_gate:
        level = first_stage_ndcg([queries[q] for q in qids], y, ideals, qvec, docs, bm25, own_idx)
        used = ad.dense_candidates if level["dense"] >= level["bm25"] else 0
        chosen["dense_candidates"] = {"asked": ad.dense_candidates, "used": used, "feedback_ndcg10": level}
        probe = probe.model_copy(update={"dense_candidates": used})
    cands, bm_s, rm3_s, vecs, gains, tuned = [], [], [], [], [], []
    say("candidates and RM3 features", 0.1)
    first_stage = FirstStage(collection, bm25, docs, probe)
    n_bm25 = []
    for i, q in enumerate(qids):
        idx, s, n = first_stage.candidates(queries[q], qvec[i], depth)
        n_bm25.append(n)
        ids = [collection.doc_ids[i] for i in idx]
        top = np.argsort(-s, kind="stable")[: probe.rm3_docs]
        weights = rm3.expanded(queries[q], [(ids[i], collection.text(ids[i])) for i in top], s[top],
                               probe.rm3_terms, probe.rm3_lambda, idf=probe.rm3_idf)
        tuned.append(None if k1 is None else rm3.bm25_with(queries[q], [(d, collection.text(d)) for d in ids], k1, b,
                                                      avgdl))
        cands.append(ids)
        bm_s.append(s)
        rm3_s.append(rm3.scores(weights, idx))
        vecs.append(docs[idx])
        gains.append(np.array([qrels[q].get(d, 0) for d in ids], dtype=np.float64))

    extra_q, extra_y = _unlabelled_rows(ad, unjudged or [], own, collection, encoder, bm25, docs, parent_fusion_weight,
                                        seed, chosen, say)

    def rows_for(train_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        keep = np.isin(aug_src, train_idx)
        return (np.concatenate([qvec[train_idx], aug_vec[keep], extra_q]),
                np.concatenate([y[train_idx], y[aug_src[keep]], extra_y]))

    # 1) adapter epochs by early stopping on a dev slice, judged the way the adapter is used: fused with BM25
    perm = rng.permutation(len(qids))
    n_dev = max(1, int(round(cfg.dev_fraction * len(qids))))
    dev, tr = perm[:n_dev], perm[n_dev:]
    qt, yt = rows_for(tr)

    def dev_fn(w: np.ndarray | None) -> float:
        out = []
        for i in dev:
            qa = adapt(qvec[i], w)
            s = 0.4 * zscore(bm_s[i]) + 0.6 * zscore(vecs[i] @ qa)
            out.append(ndcg10(s, gains[i], ideals[i]))
        return float(np.mean(out))

    say("adapter: early stopping on a dev slice", 0.2)
    _, epochs, dev_ndcg, curve = train_adapter(qt, yt, docs, cfg, seed, dev_fn, threads=threads)
    base_dev = dev_fn(None)
    epochs = max(epochs, cfg.eval_every)
    _check_deadline(deadline)

    # 2) out-of-fold features
    k = min(folds, len(qids))
    fold_of = np.array_split(rng.permutation(len(qids)), k)
    oof: list[np.ndarray | None] = [None] * len(qids)
    for f, held in enumerate(fold_of):
        say(f"out-of-fold features {f + 1}/{k}", 0.3 + 0.5 * f / k)
        train_idx = np.setdiff1d(np.arange(len(qids)), held)
        qt, yt = rows_for(train_idx)
        w_f, _, _, _ = train_adapter(qt, yt, docs, cfg, seed + f + 1, epochs=epochs, threads=threads)
        ex = Expert(probe, None, {"W": w_f, "mem_q": qvec})
        for i in held:
            oof[i] = expert_features(ex, qvec[i], cands[i], vecs[i], bm_s[i], rm3_s[i], exclude_memory=int(i),
                                     bm25_tuned=tuned[i])
        _check_deadline(deadline)

    # 3) linear weights: the blend of ListNet and bagged coordinate ascent, from the parent's fusion
    say("linear weights: ListNet + coordinate ascent on nDCG@10, CV on the feedback", 0.85)
    w0 = np.zeros(len(FEATURES))
    w0[FEATURES.index("bm25")] = 1.0 - parent_fusion_weight
    w0[FEATURES.index("cos")] = parent_fusion_weight
    start = w0 + np.array([ad.prior.get(f, 0.0) for f in FEATURES])
    packed = Packed([x for x in oof if x is not None], gains, ideals)
    served = served_parent_ndcg([b[:n] for b, n in zip(bm_s, n_bm25, strict=True)],
                                [v[:n] @ qvec[i] for i, (v, n) in enumerate(zip(vecs, n_bm25, strict=True))],
                                gains, ideals, parent_fusion_weight, parent_depth)
    base = float(served.mean())
    w, selection = select_weights(packed, start, bags, seed, deadline=deadline, groups=relevance_groups(mem_docs),
                                  parent_depth=parent_depth, base=w0, parent=served)
    fitted = float(packed.ndcg(w).mean())
    say(f"selected {selection.selected} (CV gain {selection.cv_gain:+.4f} +- {selection.cv_gain_se:.4f})", 0.9)

    # 4) final adapter on every feedback query
    say("final adapter", 0.95)
    qt, yt = rows_for(np.arange(len(qids)))
    w_final, _, _, _ = train_adapter(qt, yt, docs, cfg, seed, epochs=epochs, threads=threads)
    gate_pos = qvec if not (ad.unjudged and unjudged) else np.vstack([qvec, encoder.encode(list(unjudged))])
    gate_w, gate_b = fit_gate(gate_pos, gate_negatives, seed)
    params = probe.model_copy(update={"file": f"experts/{name}.npz", "gate_bias": gate_b,
                                      "enabled": selection.enabled, "adaptation": chosen,
                                      "weights": {f: float(v) for f, v in zip(FEATURES, w, strict=True)}})
    report = LtrFitReport(
        train_queries=len(qids), augmented_queries=len(aug), folds=k, adapter_epochs=epochs,
        adapter_dev_ndcg10=round(dev_ndcg, 4), adapter_dev_ndcg10_base=round(base_dev, 4),
        oof_ndcg10_parent=round(base, 4), oof_ndcg10_fitted=round(fitted, 4), weights=params.weights,
        selection=selection,
        loss_curve=curve[:: max(1, len(curve) // 50)], wall_seconds=round(time.perf_counter() - t0, 1),
    )
    if not all(math.isfinite(v) for v in params.weights.values()):
        raise InputError("Fitted weights are not finite.", "Check the dataset; nothing was saved.")
    return params, {"W": w_final, "mem_q": qvec.astype(np.float32), "gate_w": gate_w}, report


def first_stage_ndcg(texts: list[str], grades: np.ndarray, ideals: list[np.ndarray], qvec: np.ndarray,
                     docs: np.ndarray, bm25, rows: np.ndarray) -> dict[str, float]:
    """Mean nDCG@10 over the feedback queries (`texts`, embeddings `qvec`, positive `grades` per collection row as
    fit_expert's (n_queries, n_docs) target, `ideals` their positive grades) of each first stage alone within the
    new corpus (collection `rows`): BM25's top 10 and the base encoder's nearest 10.

    `Adaptation.dense_gate` adds dense candidates only when the second is at least the first: where the encoder
    ranks the domain below BM25 (lisa: 0.356 vs 0.490), its nearest documents are noise the expert must then learn
    to push down, which 16 feedback queries cannot teach (round D: lisa -0.028, npl +0.022; docs/benchmarks.md)."""
    own_vecs = docs[rows]
    out = {"bm25": [], "dense": []}
    for text, g, ideal, q in zip(texts, grades, ideals, qvec, strict=True):
        gains = g[rows].astype(np.float64)
        bm = np.asarray(bm25.scores(text), dtype=np.float64)[rows]
        for label, scores in (("bm25", bm), ("dense", own_vecs @ q)):
            top = np.argsort(-scores, kind="stable")[:10]
            out[label].append(ndcg10(scores[top], gains[top], ideal))
    return {k: round(float(np.mean(v)), 4) for k, v in out.items()}


def _unlabelled_rows(ad: Adaptation, unjudged: list[str], own: list[str], collection, encoder, bm25, docs: np.ndarray,
                     parent_w: float, seed: int, chosen: dict, say: Progress) -> tuple[np.ndarray, np.ndarray]:
    """Adapter rows that need no judgment: corpus pseudo-queries (target: their source document) and unjudged
    traffic queries (target: the parent's top 5 for them, by its BM25 + cosine fusion over BM25's top 100)."""
    dim = docs.shape[1]
    qs, ys = [np.zeros((0, dim), dtype=np.float32)], [np.zeros((0, len(collection)), dtype=np.float32)]
    if ad.pseudo_queries:
        say(f"{ad.pseudo_queries} corpus pseudo-queries ({ad.pseudo_kind})", 0.15)
        pq = pseudo_queries(own, collection.text, ad.pseudo_queries, seed, ad.pseudo_kind,
                            tokenize=bm25.tokenize, df=Rm3(bm25).df)
        if pq:
            qs.append(encoder.encode([q for _, q in pq]))
            y = np.zeros((len(pq), len(collection)), dtype=np.float32)
            y[np.arange(len(pq)), [collection.index_of[d] for d, _ in pq]] = 1.0
            ys.append(y)
        chosen["pseudo_queries"] = {"made": len(pq), "examples": [q for _, q in pq[:3]]}
    if ad.unjudged and unjudged:
        uv = encoder.encode(list(unjudged))
        y = np.zeros((len(unjudged), len(collection)), dtype=np.float32)
        for i, text in enumerate(unjudged):
            idx, s = bm25.top(text, 100)
            if len(idx):
                fused = (1 - parent_w) * zscore(s) + parent_w * zscore(docs[idx] @ uv[i])
                y[i, idx[np.argsort(-fused, kind="stable")[:5]]] = 1.0
        keep = y.sum(1) > 0
        qs.append(uv[keep])
        ys.append(y[keep])
        chosen["unjudged"] = {"queries": int(keep.sum())}
    return np.concatenate(qs).astype(np.float32), np.concatenate(ys)


def fit_gate(positives: np.ndarray, negatives: np.ndarray, seed: int = 0) -> tuple[np.ndarray, float]:
    """Class-balanced logistic regression: this domain's queries vs everything else the model already serves."""
    from sklearn.linear_model import LogisticRegression

    if len(negatives) == 0:
        raise InputError("No reference queries of the original domain to fit the gate against.",
                         "Make the original dataset's train split available (AUTOOPT_DATA_DIR).")
    x = np.vstack([positives, negatives])
    y = np.r_[np.ones(len(positives)), np.zeros(len(negatives))]
    lr = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000, random_state=seed).fit(x, y)
    return lr.coef_[0].astype(np.float32), float(lr.intercept_[0])


def _check_deadline(deadline: float | None) -> None:
    if deadline is not None and time.perf_counter() > deadline:
        raise TimeoutError("training time budget exhausted")
