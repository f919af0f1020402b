"""The ltr_fusion trainer's weight fitting and CV model selection, on synthetic features with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from autooptimizer.ml.ltr import BLEND, PARENT, Packed, blend_weights, coordinate_ascent, ndcg10, select_weights
from autooptimizer.search.rerankers.ltr_fusion import FEATURES


def _queries(n: int, signal: str | None, seed: int = 0) -> tuple[list, list, list]:
    """n queries x 60 candidates; relevance is visible in bm25+cos for all queries (what the parent uses) and, with
    `signal`, much more clearly in that feature."""
    rng = np.random.default_rng(seed)
    feats, gains, ideals = [], [], []
    for _ in range(n):
        g = np.zeros(60)
        g[rng.choice(60, 4, replace=False)] = [2, 1, 1, 1]
        x = rng.normal(size=(60, len(FEATURES)))
        x[:, 0] += 0.5 * (g > 0)
        x[:, 1] += 0.5 * (g > 0)
        if signal:
            x[:, FEATURES.index(signal)] += 3.0 * (g > 0)
        feats.append(x)
        gains.append(g)
        ideals.append(g[g > 0])
    return feats, gains, ideals


W0 = np.zeros(len(FEATURES))
W0[:2] = 0.3, 0.7


def test_packed_ndcg_matches_per_query_ndcg10() -> None:
    feats, gains, ideals = _queries(25, "rm3")
    feats[3], gains[3] = feats[3][:7], gains[3][:7]  # a short candidate list (padding)
    p = Packed(feats, gains, ideals)
    for w in (W0, np.eye(len(FEATURES))[4], np.resize([1.0, -1, 0.5, 0, 0, 2], len(FEATURES))):
        want = [ndcg10(x @ w, g, i) for x, g, i in zip(feats, gains, ideals, strict=True)]
        assert np.allclose(p.ndcg(w), want)
    # hand-checked: one query, relevant doc (grade 1) ranked 2nd of 3 -> 1/log2(3)
    one = Packed([np.array([[3.0], [2.0], [1.0]])], [np.array([0, 1, 0])], [np.array([1.0])])
    assert np.isclose(one.ndcg(np.array([1.0]))[0], 1 / np.log2(3))


def test_coordinate_ascent_moves_only_free_weights() -> None:
    p = Packed(*_queries(30, "rm3"))
    w, best = coordinate_ascent(p, np.arange(30), W0, free=(0, 1, 2))
    assert w[FEATURES.index("rm3")] == 0 and np.array_equal(w[3:], W0[3:])
    w, best_all = coordinate_ascent(p, np.arange(30), W0)
    assert w[FEATURES.index("rm3")] > 0 and best_all > best > float(p.ndcg(W0).mean())


def test_selection_enables_a_feature_that_cross_validates() -> None:
    p = Packed(*_queries(40, "adapted"))
    w, sel = select_weights(p, W0, bags=3, seed=0)
    assert sel.enabled and sel.selected == BLEND and w[FEATURES.index("adapted")] > 0
    assert sel.cv_gain > sel.cv_gain_se > 0 and sel.cv_ndcg10[BLEND] > sel.cv_ndcg10[PARENT] + 0.1
    members = blend_weights(p, np.arange(40), W0, bags=3, seed=0)
    assert np.allclose(w, members[BLEND]) and np.allclose(w, (members["listnet@0.01"] + members["ascent@0.5"]) / 2)

    groups = np.repeat(np.arange(3), 4)
    _, sel = select_weights(p, W0, bags=1, seed=0, groups=groups)
    assert sel.folds == 3 and sel.groups == 3


def test_on_pure_noise_the_gate_stops_shown_harm_and_the_rest_is_bounded() -> None:
    """Pure-noise extra features and a parent that already weighs bm25 and cos as the data does, so any move is harm.
    The gate disables the expert exactly where CV on the feedback shows harm (gain < -1 SE); it lets through noise
    fits whose CV looks neutral, by design (a stricter gate also drops real gains, see select_weights), and those
    cost a bounded amount on fresh queries (the promotion rule, not this gate, stops them reaching users)."""
    w_opt = np.zeros(len(FEATURES))
    w_opt[:2] = 0.5
    disabled = 0
    for draw in range(6):
        p = Packed(*_queries(40, None, seed=100 + draw))
        w, sel = select_weights(p, w_opt, bags=3, seed=0)
        assert sel.cv_ndcg10[PARENT] == round(float(p.ndcg(w_opt).mean()), 4)
        assert sel.enabled == (sel.cv_gain >= -sel.cv_gain_se)
        if not sel.enabled:
            disabled += 1
            assert sel.selected == PARENT and np.array_equal(w, w_opt)
            continue
        fresh = Packed(*_queries(200, None, seed=200 + draw))
        assert fresh.ndcg(w).mean() >= fresh.ndcg(w_opt).mean() - 0.03
    assert disabled >= 2


def test_a_harmful_prior_is_the_fits_start_but_the_gate_still_compares_with_the_parent() -> None:
    """Adaptation.prior moves where the fits start and shrink to, not what they must beat: with a prior on a pure
    noise feature the CV gain is measured against the parent's fusion, shows harm, and the parent's weights serve."""
    p = Packed(*_queries(60, None, seed=3))
    start = W0.copy()
    start[FEATURES.index("popularity")] = 10.0
    w, sel = select_weights(p, start, bags=3, seed=0, base=W0)
    assert sel.cv_ndcg10[PARENT] == round(float(p.ndcg(W0).mean()), 4)
    assert not sel.enabled and sel.cv_gain < -sel.cv_gain_se and np.array_equal(w, W0)
    # the same prior on a feature that carries the relevance: the fit keeps it and beats the parent
    p = Packed(*_queries(30, "rm3", seed=3))
    start = W0.copy()
    start[FEATURES.index("rm3")] = 1.0
    w, sel = select_weights(p, start, bags=3, seed=0, base=W0)
    assert sel.enabled and w[FEATURES.index("rm3")] > 0.5 and sel.cv_gain > 0.1


def test_relevance_groups_and_grouped_folds() -> None:
    """Queries sharing judged-relevant documents (Jaccard >= 0.1) form one group; a group never spans two folds."""
    from autooptimizer.ml.ltr import grouped_folds, relevance_groups

    rel = [["a", "b"], ["b", "c"], ["c", "d"], ["x"], ["y"], ["y", "z"], [], ["q"]]
    g = relevance_groups(rel)
    assert g[0] == g[1] == g[2] and g[4] == g[5] and len(set(g.tolist())) == 5  # {0,1,2} {3} {4,5} {6} {7}
    assert relevance_groups([["a"] + list("bcdefghijk"), ["a", "z"]]).tolist() == [0, 1]  # Jaccard 1/12 < 0.1
    folds = grouped_folds(g, 3, np.random.default_rng(0))
    assert sorted(np.concatenate(folds).tolist()) == list(range(8))
    for grp in set(g.tolist()):
        assert sum(bool(np.isin(np.flatnonzero(g == grp), f).any()) for f in folds) == 1
    assert max(len(f) for f in folds) - min(len(f) for f in folds) <= 2


def test_grouped_cv_is_used_for_selection() -> None:
    """With groups given, the folds respect them (fold count capped by the number of groups)."""
    p = Packed(*_queries(12, "adapted"))
    groups = np.repeat(np.arange(3), 4)
    _, sel = select_weights(p, W0, bags=1, seed=0, groups=groups)
    assert sel.folds == 3 and sel.groups == 3


def test_selection_is_deterministic_under_a_seed() -> None:
    p = Packed(*_queries(30, "dense_prf"))
    a, b = select_weights(p, W0, bags=3, seed=5), select_weights(p, W0, bags=3, seed=5)
    assert np.array_equal(a[0], b[0]) and a[1] == b[1]


def test_listnet_gradient_and_pull_toward_the_parent() -> None:
    from scipy.optimize import check_grad

    from autooptimizer.ml.ltr import listnet

    p = Packed(*_queries(30, "memory"))
    idx = np.arange(30)
    free = listnet(p, idx, W0, l2=0.001)
    assert p.ndcg(free).mean() > p.ndcg(W0).mean() + 0.2 and free[FEATURES.index("memory")] > 0.5
    pinned = listnet(p, idx, W0, l2=1000.0)
    assert np.abs(pinned - W0).max() < 0.01, "a strong L2 keeps the parent's fusion"
    # the analytic gradient used by L-BFGS is right (finite differences), padding included
    from autooptimizer.ml.ltr import listnet_objective

    feats, gains, ideals = _queries(8, "memory")
    keep = np.argsort(-gains[2], kind="stable")[:9]  # a short list that still holds the relevant documents
    feats[2], gains[2] = feats[2][keep], gains[2][keep]
    q = Packed(feats, gains, ideals)
    t = q.g / q.g.sum(1, keepdims=True)
    args = (q.x, t, q.mask, W0, 0.3)
    w = np.resize([0.2, 0.5, -0.3, 0.1, 0.4, 0.0], len(FEATURES))
    assert check_grad(lambda v: listnet_objective(v, *args)[0], lambda v: listnet_objective(v, *args)[1], w) < 1e-5


def test_ndcg10_agrees_with_the_one_definition_on_random_rankings() -> None:
    """ltr's array nDCG vs search.metrics_eval (ir_measures) on random candidate lists: many equal scores, negative
    and zero grades, judged documents that were not retrieved, and queries with nothing relevant. Doc ids fall with
    the candidate index, so trec_eval's tie order (doc id descending) is ltr's stable candidate order."""
    from autooptimizer.search.metrics_eval import ndcg10_ranking, ndcg_at_10_per_query

    rng = np.random.default_rng(11)
    feats, all_gains, ideals, wants, ties = [], [], [], [], 0
    for _ in range(300):
        n = int(rng.integers(1, 26))
        scores = rng.integers(0, 5, n).astype(float)  # 5 distinct values: ties in most lists
        gains = rng.choice([-2, -1, 0, 0, 0, 1, 2, 3], n).astype(float)
        ids = [f"d{999 - i:03d}" for i in range(n)]
        judged = {d: int(g) for d, g in zip(ids, gains, strict=True)}
        judged |= {f"unretrieved{j}": int(rng.integers(-1, 4)) for j in range(int(rng.integers(0, 4)))}
        ideal = np.array([g for g in judged.values() if g > 0], dtype=float)
        got = ndcg10(scores, gains, ideal)
        want = ndcg_at_10_per_query({"q": dict(zip(ids, scores, strict=True))}, {"q": judged}).get("q")
        served = [ids[i] for i in np.argsort(-scores, kind="stable")]
        assert ndcg10_ranking(served, judged) == (None if want is None else pytest.approx(want, abs=1e-12))
        assert got == (0.0 if want is None else pytest.approx(want, abs=1e-12))
        assert ndcg10(scores, gains, np.append(ideal, [-1.0, 0.0])) == pytest.approx(got, abs=1e-12)  # add nothing
        ties += len(set(scores[np.argsort(-scores, kind="stable")[:10]])) < min(n, 10)
        feats.append(scores[:, None])
        all_gains.append(gains)
        ideals.append(ideal)
        wants.append(got)
    assert ties > 100  # the tie order was really exercised
    assert np.allclose(Packed(feats, all_gains, ideals).ndcg(np.array([1.0])), wants, atol=1e-12)


def test_served_parent_ndcg_is_what_the_parent_pipeline_serves(ml_world: dict) -> None:
    """The CV gate and the study compare an expert with the parent's ranking as served: BM25's first `depth`
    candidates, fused with z-scores over those only (not the parent's weights on features z-scored over the
    expert's deeper or dense-extended candidates)."""
    from autooptimizer.ml.evaluate import load_split
    from autooptimizer.ml.ltr import served_parent_ndcg
    from autooptimizer.search.embeddings import doc_embeddings
    from autooptimizer.search.metrics_eval import ndcg_at_10_per_query
    from autooptimizer.search.pipeline import SearchPipeline, get_bm25

    parent = ml_world["parent"]
    collection, queries, qrels = load_split(ml_world["data"] / "dom")
    pipe = SearchPipeline(parent, collection).warm(progress=False)
    want = ndcg_at_10_per_query(pipe.run(queries, k=10), qrels)
    qids = sorted(want)
    bm25, enc = get_bm25(collection), pipe.reranker.encoder  # type: ignore[attr-defined]
    docs = doc_embeddings(collection, enc, progress=False)
    deep = [bm25.top(queries[q], 40) for q in qids]  # the expert's deeper candidates: the parent uses the first 20
    gains = [np.array([qrels[q].get(collection.doc_ids[i], 0) for i in idx], dtype=float) for q, (idx, _) in
             zip(qids, deep, strict=True)]
    ideals = [np.array([g for g in qrels[q].values() if g > 0], dtype=float) for q in qids]
    cos = [docs[idx] @ enc.encode([queries[q]])[0] for q, (idx, _) in zip(qids, deep, strict=True)]
    got = served_parent_ndcg([s for _, s in deep], cos, gains, ideals, parent.fusion_weight, parent.rerank_depth)
    assert np.allclose(got, [want[q] for q in qids], atol=1e-9) and got.mean() > 0.3
    assert not np.allclose(got, served_parent_ndcg([s for _, s in deep], cos, gains, ideals, 0.0, None)), \
        "the weight and depth matter: BM25 alone over 40 ranks differently"
