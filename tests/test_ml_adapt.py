"""Unsupervised domain adaptation: pseudo-queries are deterministic under a seed and come from their source document,
BM25 with any k1, b is the textbook formula, the inverse cloze removal matters, RM3's idf weighting prefers rare
terms, and each adaptation is switchable and recorded in the trained model's params."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from autooptimizer.ml.adapt import Adaptation, TermMatrix, ict_mrr, pseudo_queries, sentences
from autooptimizer.search.rerankers.ltr_fusion import Rm3

DOCS = {
    "d/0": "Shock waves form at the leading edge. The boundary layer thickens downstream of the shock wave. "
           "Heat transfer rises sharply.",
    "d/1": "Library catalogues index books by subject. Users search the catalogue by keyword and author. "
           "Recall depends on indexing depth.",
    "d/2": "Flutter of thin panels was measured in a wind tunnel. Panel stiffness changed the flutter speed.",
    "d/3": "one short line",
    "d/4": "Citation indexing links papers by their references. Co-citation measures subject similarity "
           "between documents. Bibliographic coupling is its converse.",
}


class _Bm25:
    """The parts of BM25Index that Rm3 and the term matrix read: whitespace tokens, a vocabulary, df."""

    def __init__(self, docs: dict[str, str]) -> None:
        toks = {d: self.tokenize(t) for d, t in docs.items()}
        self.vocab = {t: i for i, t in enumerate(sorted({t for ts in toks.values() for t in ts}))}
        df = np.zeros(len(self.vocab), dtype=np.int64)
        for ts in toks.values():
            for t in set(ts):
                df[self.vocab[t]] += 1
        indptr = np.concatenate([[0], np.cumsum(df)])

        class Retriever:
            scores = {"num_docs": len(docs), "indptr": indptr}

        self.retriever = Retriever()

    @staticmethod
    def tokenize(text: str) -> list[str]:
        return [w.strip(".,").lower() for w in text.split() if w.strip(".,")]


@pytest.mark.parametrize("kind", ["ict", "crop", "terms"])
def test_pseudo_queries_are_deterministic_under_a_seed(kind: str) -> None:
    bm = _Bm25(DOCS)
    rm3 = Rm3(bm)
    ids = sorted(DOCS)

    def make(seed: int) -> list[tuple[str, str]]:
        return pseudo_queries(ids, DOCS.__getitem__, 3, seed, kind, tokenize=bm.tokenize, df=rm3.df)

    first = make(7)
    assert first == make(7) and len(first) == 3
    assert len({d for d, _ in first}) == 3 and "d/3" not in {d for d, _ in first}  # distinct, long enough docs
    assert any(make(s) != first for s in (8, 9, 10))
    for doc, q in first:
        if kind == "ict":
            assert q in sentences(DOCS[doc])
        elif kind == "crop":
            assert q in DOCS[doc] and 6 <= len(q.split()) <= 16
        else:
            assert set(q.split()) <= set(bm.tokenize(DOCS[doc])) and len(q.split()) == 6


def test_terms_kind_needs_the_index_statistics() -> None:
    with pytest.raises(ValueError, match="tokenize and df"):
        pseudo_queries(sorted(DOCS), DOCS.__getitem__, 2, 0, "terms")


def test_bm25_with_any_k1_b_is_the_textbook_formula() -> None:
    bm = _Bm25(DOCS)
    rm3 = Rm3(bm)
    query, doc = "flutter panel speed shock", "d/2"
    toks = bm.tokenize(DOCS[doc])
    k1, b, avgdl = 0.9, 0.4, 12.0
    want = 0.0
    for t in ("flutter", "panel", "speed"):  # "shock" is not in d/2: it adds nothing
        df = rm3.df(t)
        idf = math.log(1 + (len(DOCS) - df + 0.5) / (df + 0.5))
        tf = toks.count(t)
        want += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(toks) / avgdl))
    got = rm3.bm25_with(query, [(doc, DOCS[doc]), ("d/1", DOCS["d/1"])], k1, b, avgdl)
    assert got[0] == pytest.approx(want) and got[1] == 0.0
    for perm in ("speed shock flutter panel", "panel speed flutter"):  # term order does not matter
        assert rm3.bm25_with(perm, [(doc, DOCS[doc])], k1, b, avgdl)[0] == pytest.approx(want)


def test_inverse_cloze_takes_the_query_sentence_out_of_its_document() -> None:
    docs = {"d/0": "alpha beta gamma. delta epsilon.", "d/1": "alpha beta gamma alpha beta gamma. zeta."}
    bm = _Bm25(docs)
    rm3 = Rm3(bm)
    tm = TermMatrix(rm3, sorted(docs), docs.__getitem__)
    ids = np.array([bm.vocab[t] for t in ("alpha", "beta", "gamma")])
    # the query is d/0's first sentence: taken out, d/0 keeps no query term, so d/1 outranks it
    assert ict_mrr(tm, [(0, ids, np.ones(3))], 1.2, 0.75) == 0.5
    assert ict_mrr(tm, [(1, ids, np.ones(3))], 1.2, 0.75) == 1.0  # d/1 still holds the terms once more


def test_rm3_idf_weighting_prefers_terms_rare_in_the_corpus() -> None:
    # "usual" is in 3 of 8 documents (under RM3's 50% cut), "rare" in 1: the feedback document has "usual" twice,
    # so frequency alone picks it (2/3 vs 1/3); with idf, 1/3 log 8 > 2/3 log 8/3
    corpus = {f"c/{i}": "filler" + (" usual" if i < 2 else "") for i in range(7)}
    fb = "rare usual usual"
    bm = _Bm25({**corpus, "c/fb": fb})
    rm3 = Rm3(bm)
    plain = rm3.expanded("query", [("c/fb", fb)], np.array([1.0]), n_terms=1, lam=0.5)
    idf = rm3.expanded("query", [("c/fb", fb)], np.array([1.0]), n_terms=1, lam=0.5, idf=True)
    assert "rare" not in plain and "rare" in idf


def test_each_adaptation_is_switchable_and_recorded_in_the_params(ml_world: dict, tmp_path: Path) -> None:
    from autooptimizer.ml.dataset import build_dataset
    from autooptimizer.ml.evaluate import load_split
    from autooptimizer.ml.feedback import simulate_feedback, split_judged
    from autooptimizer.ml.train import TrainConfig, train
    from autooptimizer.search import model_store
    from autooptimizer.search.rerankers import build_reranker

    collection, queries, qrels = load_split(ml_world["data"] / "dom")
    fb, _ = split_judged(sorted(queries), seed=0)
    log = simulate_feedback(ml_world["parent"], collection, {q: queries[q] for q in fb}, qrels,
                            tmp_path / "feedback.jsonl", dataset="dom")
    ds = build_dataset(log).hash
    on = Adaptation(pseudo_queries=8, pseudo_kind="crop", bm25_tune=True, bm25_tune_queries=20, rm3_idf=True,
                    prior={"rm3": 0.25})
    experts = {}
    for label, ad in (("off", Adaptation()), ("on", on)):
        res = train(ds, cfg=TrainConfig(trainer="ltr", original="orig", depth=20, adaptation=ad),
                    artifacts_dir=tmp_path / label)
        experts[label] = model_store.load(res.version)
    off_p, on_p = (experts[k].params["experts"][0] for k in ("off", "on"))
    assert off_p["adaptation"]["settings"] == Adaptation().model_dump()
    assert (off_p["bm25_k1"], off_p["rm3_idf"]) == (None, False) and "pseudo_queries" not in off_p["adaptation"]
    assert on_p["adaptation"]["settings"] == on.model_dump()
    assert on_p["rm3_idf"] is True and on_p["adaptation"]["pseudo_queries"]["made"] == 8
    chosen = on_p["adaptation"]["bm25"]
    assert (on_p["bm25_k1"], on_p["bm25_b"]) == (chosen["k1"], chosen["b"]) and len(chosen["ict_mrr"]) == 20
    # served: the bm25_tuned column is there exactly when the expert has a tuned k1
    from autooptimizer.search.pipeline import get_bm25
    from autooptimizer.search.rerankers.ltr_fusion import FEATURES, LtrFusionReranker

    col = FEATURES.index("bm25_tuned")
    q = queries[fb[0]]
    for label, want_zero in (("off", True), ("on", False)):
        rr = build_reranker(experts[label], collection)
        assert isinstance(rr, LtrFusionReranker)
        idx, s = get_bm25(collection).top(q, 20)
        ids = [collection.doc_ids[i] for i in idx]
        x = rr.features(rr.experts[0], q, rr.encoder.encode([q])[0], ids, s)
        assert bool(np.all(x[:, col] == 0)) is want_zero


def test_a_prior_names_features_the_expert_computes() -> None:
    assert Adaptation(prior={"rm3": 0.25, "dense_prf": 0.1}).prior == {"rm3": 0.25, "dense_prf": 0.1}
    with pytest.raises(ValueError, match=r"unknown feature\(s\) \['rm4'\]; use any of"):
        Adaptation(prior={"rm4": 0.25})
    with pytest.raises(ValueError, match="finite"):
        Adaptation(prior={"rm3": float("nan")})


def test_a_misspelt_adaptation_field_is_refused_not_ignored() -> None:
    """`prior` comes from Python or JSON: a typo (`priors`, `adaptaton`) must fail naming the field, not train with
    the defaults as if the operator had asked for nothing; a prior on `bm25_tuned` without `bm25_tune` weighs a
    feature that is always 0 (a silent no-op), and a bool is not a weight."""
    from pydantic import ValidationError

    from autooptimizer.ml.train import TrainConfig

    with pytest.raises(ValidationError, match="priors"):
        Adaptation.model_validate({"priors": {"rm3": 0.25}})
    with pytest.raises(ValidationError, match="adaptaton"):
        TrainConfig.model_validate({"trainer": "ltr", "adaptaton": {"prior": {"rm3": 0.25}}})
    with pytest.raises(ValidationError, match=r"bm25_tuned.*bm25_tune=True"):
        Adaptation(prior={"bm25_tuned": 0.3})
    assert Adaptation(prior={"bm25_tuned": 0.3}, bm25_tune=True).prior == {"bm25_tuned": 0.3}
    with pytest.raises(ValidationError, match="prior.rm3"):
        Adaptation.model_validate({"prior": {"rm3": True}})
    assert TrainConfig.model_validate_json('{"adaptation": {"prior": {"rm3": 1}}}').adaptation.prior == {"rm3": 1.0}


def test_dense_candidates_are_recorded_and_served_exactly_as_trained(ml_world: dict, tmp_path: Path) -> None:
    """The hybrid first stage: the expert reranks BM25's candidates plus the k nearest documents of its own corpus
    that BM25 missed; training (FirstStage) and serving (SearchPipeline.candidates) give the same list, and only a
    query routed to an enabled expert with the switch on gets the extension."""
    from autooptimizer.ml.dataset import build_dataset
    from autooptimizer.ml.evaluate import load_split
    from autooptimizer.ml.feedback import simulate_feedback, split_judged
    from autooptimizer.ml.train import TrainConfig, train
    from autooptimizer.search import model_store
    from autooptimizer.search.beir import load_collection
    from autooptimizer.search.embeddings import doc_embeddings
    from autooptimizer.search.pipeline import SearchPipeline, get_bm25
    from autooptimizer.search.rerankers.ltr_fusion import FirstStage, LtrFusionReranker

    collection, queries, qrels = load_split(ml_world["data"] / "dom")
    fb, held = split_judged(sorted(queries), seed=0)
    log = simulate_feedback(ml_world["parent"], collection, {q: queries[q] for q in fb}, qrels,
                            tmp_path / "feedback.jsonl", dataset="dom")
    ds = build_dataset(log).hash
    versions = {}
    for label, ad in (("off", Adaptation()), ("on", Adaptation(dense_candidates=6)),
                      ("gated", Adaptation(dense_candidates=6, dense_gate=True))):
        res = train(ds, cfg=TrainConfig(trainer="ltr", original="orig", depth=10, adaptation=ad),
                    artifacts_dir=tmp_path / label)
        versions[label] = model_store.load(res.version)
    on_p = versions["on"].params["experts"][0]
    assert on_p["dense_candidates"] == 6 and on_p["adaptation"]["settings"]["dense_candidates"] == 6
    assert versions["off"].params["experts"][0]["dense_candidates"] == 0
    assert "dense_candidates" not in on_p["adaptation"], "no gate asked: no feedback comparison recorded"
    gated = versions["gated"].params["experts"][0]
    level = gated["adaptation"]["dense_candidates"]["feedback_ndcg10"]
    want = 6 if level["dense"] >= level["bm25"] else 0
    assert gated["adaptation"]["dense_candidates"]["used"] == gated["dense_candidates"] == want
    assert 0 < level["bm25"] <= 1 and 0 < level["dense"] <= 1

    served = load_collection(["orig", "dom"])  # what the service holds: both corpora
    bm25 = get_bm25(served)
    pipes = {k: SearchPipeline(v, served).warm(progress=False) for k, v in versions.items()}
    rr = pipes["on"].reranker
    assert isinstance(rr, LtrFusionReranker)
    matrix = doc_embeddings(served, rr.encoder, progress=False)
    extended = 0
    for q in held:
        text = queries[q]
        bm_ids = [served.doc_ids[i] for i in bm25.top(text, 4)[0]]
        ids, scores = pipes["on"].candidates(text, 4)
        assert ids[: len(bm_ids)] == bm_ids and len(ids) <= len(bm_ids) + 6
        assert all(d.startswith("dom/") for d in ids[len(bm_ids):]), "only the expert's own corpus joins"
        assert np.allclose(scores, bm25.scores(text)[[served.index_of[d] for d in ids]])
        rows, _, n = FirstStage(served, bm25, matrix, rr.experts[0].p).candidates(text, rr.encoder.encode([text])[0],
                                                                                  4)
        assert [served.doc_ids[i] for i in rows] == ids and n == len(bm_ids), "training sees what serving serves"
        assert pipes["off"].candidates(text, 4)[0] == bm_ids
        extended += len(ids) > len(bm_ids)
    assert extended == len(held), "every held-out query of the new domain got dense candidates"
    # one request encodes its query once although the candidate stage and the scorer both need it (serving cost)
    from autooptimizer.search import stages
    from autooptimizer.search.encoder import query_cache_off

    with query_cache_off():
        stages.begin()
        hits = pipes["on"].search(queries[held[0]] + " again", k=5)  # a text no earlier call encoded
        took = stages.end()
    assert stages.events() == {"encoded": 1, "reranked": 1} and len(hits) == 5
    assert {"bm25", "encode", "rerank", "fusion"} <= set(took)
    # the original domain is routed to the parent: BM25's candidates only, as before
    orig_q = "treatment of heart failure and blood pressure"
    assert pipes["on"].candidates(orig_q, 4)[0] == [served.doc_ids[i] for i in bm25.top(orig_q, 4)[0]]
    # a disabled expert serves the parent's ranking over the parent's candidates
    rr.experts[0].p = rr.experts[0].p.model_copy(update={"enabled": False})
    text = queries[held[0]]
    assert pipes["on"].candidates(text, 4)[0] == [served.doc_ids[i] for i in bm25.top(text, 4)[0]]


class _Scores:
    """BM25 stand-in: fixed scores per query text."""

    def __init__(self, table: dict[str, list[float]]) -> None:
        self.table = table

    def scores(self, text: str) -> np.ndarray:
        return np.array(self.table[text], dtype=np.float32)


class _Docs:
    doc_ids = ["new/a", "new/b", "new/c", "old/x"]

    def __len__(self) -> int:
        return 4


def test_first_stage_ndcg_compares_bm25_and_the_encoder_alone_in_the_new_corpus() -> None:
    """The gate's two figures: each first stage's own top 10 within the new corpus (the original's documents are
    not candidates), scored against the feedback's judgments."""
    from autooptimizer.ml.ltr import first_stage_ndcg
    from autooptimizer.search.rerankers.ltr_fusion import own_rows

    docs = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [1.0, 0.0]], dtype=np.float32)
    qrels = {"q1": {"new/b": 1}, "q2": {"new/a": 1}}
    queries = {"q1": "one", "q2": "two"}
    qvec = np.array([[0.0, 1.0], [1.0, 0.0]], dtype=np.float32)  # the encoder finds b for q1 and a for q2
    bm25 = _Scores({"one": [3.0, 1.0, 2.0, 9.0], "two": [1.0, 0.0, 2.0, 9.0]})  # BM25 ranks them 3rd and 2nd
    grades = np.array([[qrels[q].get(d, 0) for d in _Docs.doc_ids] for q in ("q1", "q2")], dtype=np.float32)
    ideals = [np.array([1.0]), np.array([1.0])]
    got = first_stage_ndcg([queries["q1"], queries["q2"]], grades, ideals, qvec, docs, bm25,
                           own_rows(_Docs(), ["new"]))
    assert got["dense"] == 1.0
    assert got["bm25"] == round((1 / math.log2(4) + 1 / math.log2(3)) / 2, 4), "old/x (score 9) is no candidate"
    with pytest.raises(ValueError, match="dense_candidates is 0"):
        Adaptation(dense_gate=True)


def test_a_query_gated_expert_records_and_serves_dense_candidates_of_the_corpus_it_was_trained_on(
        ml_world: dict, tmp_path: Path) -> None:
    """A shift inside the original corpus gives an expert owning no corpus: training drew its dense candidates from
    the training collection (`orig`), so serving, which holds every corpus, must draw from `orig` too."""
    from autooptimizer.ml.dataset import build_dataset
    from autooptimizer.ml.evaluate import load_split
    from autooptimizer.ml.feedback import simulate_feedback
    from autooptimizer.ml.train import TrainConfig, train
    from autooptimizer.search import model_store
    from autooptimizer.search.beir import load_collection
    from autooptimizer.search.pipeline import SearchPipeline, get_bm25
    from autooptimizer.search.rerankers.ltr_fusion import LtrFusionReranker

    collection, queries, qrels = load_split(ml_world["data"] / "orig", "train")
    log = simulate_feedback(ml_world["parent"], collection, queries, qrels, tmp_path / "feedback.jsonl",
                            dataset="orig")
    res = train(build_dataset(log).hash, artifacts_dir=tmp_path / "a",
                cfg=TrainConfig(trainer="ltr", original="orig", depth=10, adaptation=Adaptation(dense_candidates=6)))
    p = model_store.load(res.version).params["experts"][0]
    assert (p["domains"], p["dense_corpora"], p["dense_candidates"]) == ([], ["orig"], 6)

    served = load_collection(["orig", "dom"])
    pipe = SearchPipeline(model_store.load(res.version), served).warm(progress=False)
    rr = pipe.reranker
    assert isinstance(rr, LtrFusionReranker)
    rr.experts[0].p = rr.experts[0].p.model_copy(update={"gate_bias": 50.0, "enabled": True})  # claims every query
    _, dom_queries, _ = load_split(ml_world["data"] / "dom")
    extended = 0
    for text in [*queries.values(), *dom_queries.values()]:
        n = len(get_bm25(served).top(text, 4)[0])
        ids, _ = pipe.candidates(text, 4)
        assert all(d.startswith("orig/") for d in ids[n:]), (text, ids)
        extended += len(ids) > n
    assert extended == len(queries) + len(dom_queries)


def test_named_variants_refuse_every_unknown_name_at_once_and_an_empty_list() -> None:
    from autooptimizer.errors import InputError
    from autooptimizer.ml.adapt import variants

    assert list(variants(["none", "dense100_gated"])) == ["none", "dense100_gated"]
    with pytest.raises(InputError, match=r"Unknown adaptations 'x', 'y'\."):
        variants(["x", "none", "y"])
    with pytest.raises(InputError, match="No adaptation named"):
        variants([])
