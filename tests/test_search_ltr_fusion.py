"""ltr_fusion serving helpers with known answers: cluster-hypothesis neighbour scores and routing by provenance."""

from __future__ import annotations

import numpy as np

from autooptimizer.search.rerankers.ltr_fusion import (
    FEATURES,
    Expert,
    ExpertParams,
    LtrFusionReranker,
    LtrParams,
    dominant_corpus,
    expert_features,
    neighbour_means,
    zscore,
)


def test_neighbour_means_is_the_similarity_weighted_mean_of_the_nearest_other_candidates() -> None:
    a, b = np.array([1.0, 0.0]), np.array([0.8, 0.6])
    vecs = np.stack([a, b, np.array([0.0, 1.0]), np.array([-1.0, 0.0])])
    scores = np.array([1.0, 2.0, 3.0, 4.0])
    (got,) = neighbour_means(vecs, [scores], k=2)
    # doc 0: nearest others are doc 1 (sim 0.8) and doc 2 (sim 0); doc 3 (sim -1) is not among them
    assert np.isclose(got[0], (0.8 * 2.0 + 0.0 * 3.0) / 0.8)
    # doc 1: doc 0 (0.8) and doc 2 (0.6)
    assert np.isclose(got[1], (0.8 * 1.0 + 0.6 * 3.0) / 1.4)
    # doc 3 is dissimilar to all: negative similarities count as zero, so its neighbour score is 0
    assert got[3] == 0.0
    assert [len(x) for x in neighbour_means(vecs[:1], [scores[:1]])] == [1]


def test_popularity_counts_the_feedback_queries_that_judged_a_document_relevant() -> None:
    p = ExpertParams(name="med-x", file="", weights={}, mem_docs=[["med/a", "med/b"], ["med/b"], ["med/c"]])
    ex = Expert(p, None, {"mem_q": np.eye(3, 2, dtype=np.float32)})
    ids = ["med/a", "med/b", "med/c", "med/d"]
    vecs = np.eye(4, 2)
    col = FEATURES.index("popularity")
    args = (np.array([1.0, 0.0]), ids, vecs, np.arange(4.0), np.zeros(4))
    assert np.allclose(expert_features(ex, *args)[:, col], zscore(np.log1p([1, 2, 1, 0])))
    # leave-one-out in training: memory query 1 (which judged b) does not count for itself
    assert np.allclose(expert_features(ex, *args, exclude_memory=1)[:, col], zscore(np.log1p([1, 1, 1, 0])))


def test_dominant_corpus_counts_the_top_candidates_and_breaks_ties_by_rank() -> None:
    assert dominant_corpus(["med/1", "scifact/2", "med/3"]) == "med"
    assert dominant_corpus(["scifact/9", "med/1"]) == "scifact"
    assert dominant_corpus(["med/1"] * 3 + ["cran/1"] * 20, top=3) == "med"


def _router(domains: list[str], gate_bias: float) -> LtrFusionReranker:
    rr = LtrFusionReranker.__new__(LtrFusionReranker)  # routing needs only the experts and the threshold
    p = ExpertParams(name="med-x", file="", weights={}, domains=domains, gate_bias=gate_bias)
    rr.params = LtrParams(experts=[p], fallback={})
    rr.experts = [Expert(p, None, {"gate_w": np.zeros(2, dtype=np.float32)})]
    return rr


def test_routing_by_provenance_overrides_the_query_classifier() -> None:
    q = np.array([1.0, 0.0])
    owner = _router(["med"], gate_bias=-5.0)  # the classifier says "not med" (p ~ 0.007)
    assert owner.route(q, ["med/1", "med/2", "scifact/3"]) == 0, "its own corpus: served whatever the classifier says"
    assert owner.route(q, ["scifact/1", "scifact/2"]) is None
    claims_all = _router(["med"], gate_bias=5.0)  # the classifier would claim every query
    assert claims_all.route(q, ["scifact/1", "scifact/2", "med/3"]) is None, "another corpus: never"
    assert claims_all.route(q) == 0, "without candidates only the classifier is left"
    no_corpus = _router([], gate_bias=5.0)  # a shift inside the original corpus: the classifier decides
    assert no_corpus.route(q, ["scifact/1"]) == 0 and _router([], -5.0).route(q, ["scifact/1"]) is None
