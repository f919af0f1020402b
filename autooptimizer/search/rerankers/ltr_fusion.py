"""`ltr_fusion`: a domain-gated learning-to-rank fusion, the challenger a corpus-shift repair trains.

One model version serves every domain, so new behaviour is gated. First by provenance: an expert fitted on a corpus
of its own (`domains`, the doc-id prefixes of its judgments, never the original corpus) serves exactly the queries
whose top BM25 candidates come mostly from that corpus, and no others; the original domain's queries retrieve their
own corpus and so keep the parent's ranking. An expert without such a corpus (a shift inside the original corpus) is
gated by the query alone: it carries a domain classifier (logistic regression on the query embedding, class-balanced,
trained to tell that domain's feedback queries from the original domain's training queries and from earlier experts'
queries), and a query goes to the expert with the highest probability when it is at least 0.5. Otherwise the parent's
own ranking is returned unchanged, so the original domain is served as before. An expert whose training's
cross-validation showed it hurts is stored disabled: it claims its domain, and the parent's ranking serves it.

An expert scores the first-stage candidates with a linear model over per-query z-scored features. The candidates
are BM25's; an expert fitted with `dense_candidates` k > 0 adds the k documents of its own corpus nearest to the
query by base cosine that BM25 missed (a hybrid first stage: `dense_extension`, asked for through the pipeline's
candidate stage, `LtrFusionReranker.extra_candidates`), so a relevant document without the query's words can still
be ranked. The features:

- `bm25`: the first-stage BM25 score;
- `cos`: base MiniLM cosine (cached document embeddings, shared with the champion: no re-encoding);
- `adapted`: cosine after a trained query-side linear adapter q' = norm(q + qW) (a few seconds of torch on CPU);
- `dense_prf`: Rocchio pseudo-relevance feedback in embedding space (q' + alpha * mean of the top documents);
- `rm3`: BM25 of an RM3-expanded query (terms of the top BM25 documents);
- `memory`: documents judged relevant for the most similar feedback queries (a query-log kNN);
- `popularity`: log(1 + how many feedback queries judged the document relevant), whatever the query: some documents
  of a collection are relevant to many of its information needs (cisi's hubs), which the query-specific memory misses;
- `bm25_tuned`: BM25 with the domain's own k1 and b (tuned on corpus pseudo-queries, ml/adapt.py), 0 when the
  expert has none;
- `bm25_nn`, `cos_nn`, `memory_nn`: score regularisation by the cluster hypothesis: the similarity-weighted mean
  BM25 (cosine, memory) score of each candidate's nearest neighbours among the candidates (document embeddings).
  Relevant documents resemble each other, so a candidate whose neighbours score well is more likely relevant than its
  own score says.

Artifacts live in the version's weights folder: `experts/<name>.npz` (adapter, memory query embeddings) and
`reference.npz` (original-domain query embeddings). Everything else is in `ModelSpec.params` (see LtrParams).
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from autooptimizer.errors import InputError, NotFoundError
from autooptimizer.search.dense_index import DenseIndex
from autooptimizer.search.rerankers import register

FEATURES = ("bm25", "cos", "adapted", "dense_prf", "rm3", "memory", "bm25_nn", "cos_nn", "memory_nn", "popularity",
            "bm25_tuned")
NEIGHBOURS = 10
DOC_CACHE = 20_000  # tokenized feedback documents kept for RM3 (a few MB per thousand)


class ExpertParams(BaseModel):
    """One domain's fitted model. `weights` maps feature name -> linear weight."""

    name: str
    file: str = Field(description="npz under the weights folder: W (dim x dim), mem_q (n x dim), gate_w (dim)")
    weights: dict[str, float]
    mem_docs: list[list[str]] = Field(default_factory=list, description="relevant doc ids per memory query")
    prf_docs: int = 5
    prf_alpha: float = 1.0
    rm3_docs: int = 10
    rm3_terms: int = 10
    rm3_lambda: float = 0.5
    mem_k: int = 10
    mem_power: float = 3.0
    gate_bias: float = Field(default=0.0, description="intercept of the domain classifier (its weights are in the npz)")
    domains: list[str] = Field(default_factory=list,
                               description="corpora (doc-id prefixes) this expert owns; empty: the classifier gates")
    bm25_k1: float | None = Field(default=None, description="k1 of the `bm25_tuned` feature (None: no such feature)")
    bm25_b: float = 0.75
    bm25_avgdl: float = Field(default=1.0, description="mean document length (tokens) of the corpus it was tuned on")
    rm3_idf: bool = Field(default=False, description="RM3 expansion terms weighted by corpus idf")
    dense_candidates: int = Field(default=0, ge=0, le=1000,
                                  description="documents of its own corpus nearest to the query by base cosine added "
                                              "to BM25's candidates (0: BM25's only)")
    dense_corpora: list[str] = Field(default_factory=list,
                                     description="where an expert owning no corpus (query-gated) draws its dense "
                                                 "candidates from: the corpora it was trained on (serving holds "
                                                 "more); empty: its `domains`, else every corpus")
    adaptation: dict[str, Any] = Field(default_factory=dict, description="the unsupervised adaptations training used "
                                       "(ml/adapt.py Adaptation) and what they chose")
    enabled: bool = Field(default=True, description="False when training's cross-validation showed it hurts: "
                                            "the expert still claims its domain's queries, which get the parent's "
                                            "ranking")


class LtrParams(BaseModel):
    """`ModelSpec.params` of an ltr_fusion version."""

    experts: list[ExpertParams]
    fallback: dict[str, Any] = Field(description="the parent ModelSpec (content) that serves ungated queries")
    reference_file: str = "reference.npz"
    gate_min_probability: float = 0.5
    max_seq_length: int = Field(default=256, ge=8, le=512,
                                description="the base encoder's truncation the experts' features, reference and gate "
                                            "embeddings use: the parent's (256 for versions built before it was "
                                            "recorded)")


def zscore(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    sd = x.std() if x.size else 0.0
    return (x - x.mean()) / sd if sd > 1e-12 else np.zeros_like(x)


def neighbour_means(doc_vecs: np.ndarray, scores: list[np.ndarray], k: int = NEIGHBOURS) -> list[np.ndarray]:
    """For each candidate, the similarity-weighted mean of `scores` over its k most similar other candidates
    (cosine of the document embeddings, negative similarities count as 0)."""
    n = len(doc_vecs)
    if n < 2:
        return [np.zeros(n) for _ in scores]
    sim = doc_vecs @ doc_vecs.T
    np.fill_diagonal(sim, -np.inf)
    k = min(k, n - 1)
    nn = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    w = np.clip(np.take_along_axis(sim, nn, 1), 0, None)
    z = w.sum(1) + 1e-9
    return [(w * np.asarray(x, dtype=np.float64)[nn]).sum(1) / z for x in scores]


def adapt(q: np.ndarray, w: np.ndarray | None) -> np.ndarray:
    """q' = norm(q + qW): identity plus a learned correction, so W = 0 is the base encoder."""
    if w is None:
        return q
    v = q + q @ w
    n = np.linalg.norm(v)
    return v / n if n > 0 else q


class Rm3:
    """RM3 query expansion over a BM25Index: term weights from the top documents, scored with BM25 per term."""

    def __init__(self, bm25) -> None:
        self.bm25 = bm25
        ret = bm25.retriever
        self.n_docs = int(ret.scores["num_docs"])
        self._df = np.diff(np.asarray(ret.scores["indptr"]))
        self._term_cache: dict[str, np.ndarray] = {}
        self._doc_cache: OrderedDict[str, tuple[np.ndarray, np.ndarray, int]] = OrderedDict()
        self._term_of: np.ndarray | None = None
        self._df_by_id: np.ndarray | None = None
        self._lock = threading.Lock()

    def df(self, term: str) -> int:
        tid = self.bm25.vocab.get(term)
        return int(self._df[tid]) if tid is not None and tid < len(self._df) else 0

    def term_scores(self, term: str) -> np.ndarray:
        with self._lock:
            if term not in self._term_cache:
                if len(self._term_cache) > 20000:
                    self._term_cache.clear()
                self._term_cache[term] = np.asarray(self.bm25.retriever.get_scores([term]), dtype=np.float32)
            return self._term_cache[term]

    def doc_terms(self, doc_id: str, text: str) -> tuple[np.ndarray, np.ndarray, int]:
        """A document's (vocabulary ids, term counts, length), tokenized once per process (the corpus does not change
        under a model version; bounded LRU): tokenizing the feedback documents was most of RM3's serving cost."""
        with self._lock:
            hit = self._doc_cache.get(doc_id)
            if hit is not None:
                self._doc_cache.move_to_end(doc_id)
                return hit
        toks = self.bm25.tokenize(text)  # tokens are vocabulary terms (the index was built from this corpus)
        counts = Counter(toks)
        vocab = self.bm25.vocab
        entry = (np.array([vocab[t] for t in counts], dtype=np.int64),
                 np.array(list(counts.values()), dtype=np.float64), len(toks))
        with self._lock:
            self._doc_cache[doc_id] = entry
            while len(self._doc_cache) > DOC_CACHE:
                self._doc_cache.popitem(last=False)
        return entry

    @property
    def term_of(self) -> np.ndarray:
        """Vocabulary id -> term (built once)."""
        if self._term_of is None:
            vocab = self.bm25.vocab
            terms = np.empty(max(vocab.values(), default=-1) + 1, dtype=object)
            for t, i in vocab.items():
                terms[i] = t
            self._term_of = terms
        return self._term_of

    @property
    def df_by_id(self) -> np.ndarray:
        """Document frequency per vocabulary id (0 past the index's end), as `df(term)` reads it."""
        if self._df_by_id is None:
            n = len(self.term_of)
            df = np.zeros(n, dtype=np.int64)
            df[: min(n, len(self._df))] = self._df[:n]
            self._df_by_id = df
        return self._df_by_id

    def expanded(self, query: str, fb_docs: list[tuple[str, str]], fb_scores: np.ndarray, n_terms: int,
                 lam: float, idf: bool = False) -> dict[str, float]:
        """Weights of the expanded query: lam * original + (1 - lam) * relevance model of the feedback docs
        (`fb_docs`: (doc id, text) pairs). The relevance model is accumulated in vocabulary space, in document
        order and with the same arithmetic as a per-term loop, and ties are broken by the term, so the expansion is
        exactly the one term-by-term code gives. With `idf`, each term's relevance-model weight is multiplied by
        log(N / df) before the top terms are chosen (corpus-level statistics: terms frequent everywhere lose)."""
        q_terms = self.bm25.tokenize(query)
        terms = self.term_of
        rel = np.zeros(len(terms), dtype=np.float64)
        if len(fb_docs):
            w = np.exp(fb_scores - fb_scores.max())
            w = w / w.sum()
            for wi, (doc_id, text) in zip(w, fb_docs, strict=True):
                ids, tfs, length = self.doc_terms(doc_id, text)
                rel[ids] += float(wi) * tfs / max(length, 1)
        df = self.df_by_id
        common = 0.5 * self.n_docs
        cand = np.flatnonzero((rel > 0) & (df < common))
        if idf and len(cand):
            rel = rel.copy()
            rel[cand] *= np.log(self.n_docs / np.maximum(df[cand], 1))
        if len(cand) > n_terms:  # keep the n largest and everything tied with the n-th, then order as before
            kth = np.partition(rel[cand], len(cand) - n_terms)[len(cand) - n_terms]
            cand = cand[rel[cand] >= kth]
        best = sorted(((str(terms[i]), float(rel[i])) for i in cand), key=lambda x: (-x[1], x[0]))[:n_terms]
        z = sum(v for _, v in best) or 1.0
        qc = Counter(q_terms)
        qn = sum(qc.values()) or 1
        weights = {t: lam * c / qn for t, c in qc.items()}
        for t, v in best:
            weights[t] = weights.get(t, 0.0) + (1 - lam) * v / z
        return weights

    def bm25_with(self, query: str, docs: list[tuple[str, str]], k1: float, b: float, avgdl: float) -> np.ndarray:
        """BM25 (Lucene idf, this index's document frequencies) of `docs` ((doc id, text) pairs) with the given k1
        and b: the `bm25_tuned` feature over the first-stage candidates."""
        terms = Counter(self.bm25.tokenize(query))
        out = np.zeros(len(docs), dtype=np.float64)
        if not terms or not docs:
            return out
        vocab = self.bm25.vocab
        qids = np.array([vocab[t] for t in terms], dtype=np.int64)
        qtf = np.array(list(terms.values()), dtype=np.float64)
        df = self.df_by_id[qids].astype(np.float64)
        idf = np.append(qtf * np.log(1.0 + (self.n_docs - df + 0.5) / (df + 0.5)), 0.0)  # [-1]: not a query term
        slot = np.full(len(self.df_by_id), len(qids), dtype=np.int64)  # vocabulary id -> query term slot
        slot[qids] = np.arange(len(qids))
        for n, (doc_id, text) in enumerate(docs):  # one array lookup per candidate: this is serving cost
            ids, tfs, length = self.doc_terms(doc_id, text)
            w = idf[slot[ids]]
            norm = k1 * (1 - b + b * length / max(avgdl, 1e-9))
            out[n] = float((w * tfs * (k1 + 1) / (tfs + norm)).sum())
        return out

    def scores(self, weights: dict[str, float], rows: np.ndarray) -> np.ndarray:
        out = np.zeros(len(rows), dtype=np.float64)
        for t, w in weights.items():
            out += w * self.term_scores(t)[rows]
        return out


class Expert:
    """Loaded expert: its params plus arrays."""

    def __init__(self, params: ExpertParams, folder: Path | None, arrays: dict[str, np.ndarray] | None = None) -> None:
        self.p = params
        if arrays is None:
            path = (folder or Path(".")) / params.file
            if not path.is_file():
                raise NotFoundError(f"Expert file {path} is missing.", "Re-train the model version; it is incomplete.")
            with np.load(path) as z:
                arrays = {k: z[k] for k in z.files}
        self.w = arrays.get("W")
        self.mem_q = arrays.get("mem_q", np.zeros((0, 1), dtype=np.float32))
        self.gate_w = arrays.get("gate_w")
        self.weights = np.array([params.weights.get(f, 0.0) for f in FEATURES])
        self.judged = Counter(d for docs in params.mem_docs for d in docs)


def expert_features(
    expert: Expert,
    q: np.ndarray,
    doc_ids: list[str],
    doc_vecs: np.ndarray,
    bm25_scores: np.ndarray,
    rm3_scores: np.ndarray,
    exclude_memory: int | None = None,
    bm25_tuned: np.ndarray | None = None,
) -> np.ndarray:
    """(n_docs, len(FEATURES)) matrix. `exclude_memory` drops one memory query (leave-one-out in training);
    `bm25_tuned` None gives that feature 0."""
    n = len(doc_ids)
    bm = zscore(bm25_scores)
    cos = zscore(doc_vecs @ q) if n else np.zeros(0)
    qa = adapt(q, expert.w)
    ad = zscore(doc_vecs @ qa) if n else np.zeros(0)
    first = 0.4 * bm + 0.6 * ad
    top = np.argsort(-first, kind="stable")[: expert.p.prf_docs]
    qv = qa + expert.p.prf_alpha * doc_vecs[top].mean(0) if n else qa
    prf = zscore(doc_vecs @ qv) if n else np.zeros(0)
    mem = np.zeros(n)
    if len(expert.mem_q) and expert.p.mem_docs:
        sims = expert.mem_q @ q
        if exclude_memory is not None:
            sims[exclude_memory] = -1.0
        pos = {d: i for i, d in enumerate(doc_ids)}
        for j in np.argsort(-sims, kind="stable")[: expert.p.mem_k]:
            s = max(float(sims[j]), 0.0) ** expert.p.mem_power
            for d in expert.p.mem_docs[j]:
                if d in pos:
                    mem[pos[d]] += s
        if mem.max() > 0:
            mem = mem / mem.max()
    bm_nn, cos_nn, mem_nn = neighbour_means(doc_vecs, [bm, cos, mem]) if n else (np.zeros(0),) * 3
    own = set(expert.p.mem_docs[exclude_memory]) if exclude_memory is not None and expert.p.mem_docs else set()
    pop = np.log1p([expert.judged.get(d, 0) - (d in own) for d in doc_ids])
    tuned = zscore(bm25_tuned) if bm25_tuned is not None else np.zeros(n)
    return np.stack([bm, cos, ad, prf, zscore(rm3_scores), mem, zscore(bm_nn), zscore(cos_nn), zscore(mem_nn),
                     zscore(pop), tuned], 1)


def own_rows(collection, domains: list[str]) -> np.ndarray:
    """Collection rows of the documents in `domains` (every row when empty: an expert without a corpus of its own)."""
    if not domains:
        return np.arange(len(collection), dtype=np.int64)
    own = set(domains)
    return np.array([i for i, d in enumerate(collection.doc_ids) if d.split("/", 1)[0] in own], dtype=np.int64)


def dense_rows(collection, params: ExpertParams) -> np.ndarray:
    """Rows an expert's dense candidates come from: its own corpora, or (owning none) those it was trained on. Not
    every corpus the service holds: training never drew from the others, and a document of a corpus another expert
    owns would make that expert the dominant corpus' owner of the extended list at scoring (`route`)."""
    return own_rows(collection, params.domains or params.dense_corpora)


def dense_extension(q: np.ndarray, index: DenseIndex, have: np.ndarray, k: int) -> np.ndarray:
    """Rows of the `k` documents of `index`'s corpus nearest to `q` (inner product of unit vectors) that are not
    already in `have`, nearest first: the dense half of a hybrid first stage, the union of BM25's top and the dense
    top-k (docs/benchmarks.md, "Round D"; search/dense_index.py says when the search is exact)."""
    if k <= 0 or not len(index):
        return np.zeros(0, dtype=np.int64)
    found = index.nearest(q, k)
    seen = set(np.asarray(have).tolist())  # a set: np.isin cost 0.1-0.3 ms per query on 100 x 100 rows
    return found[np.array([r not in seen for r in found.tolist()], dtype=bool)]


class FirstStage:
    """An expert's candidates offline (training, studies) exactly as serving composes them: BM25's top `depth`, then
    the expert's dense extension (`SearchPipeline.candidates` with `LtrFusionReranker.extra_candidates`)."""

    def __init__(self, collection, bm25, matrix: np.ndarray, params: ExpertParams) -> None:
        self.bm25, self.k = bm25, params.dense_candidates
        rows = dense_rows(collection, params) if self.k else np.zeros(0, dtype=np.int64)
        self.index = DenseIndex(rows, matrix[rows])

    def candidates(self, query: str, q: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray, int]:
        """(collection rows, BM25 scores, how many of them are BM25's) for the query text and its base embedding
        `q`; the dense extension follows BM25's candidates."""
        from autooptimizer.search.bm25 import top_rows

        scores = self.bm25.scores(query)
        idx = top_rows(scores, depth)
        n = len(idx)
        if self.k and n:
            idx = np.concatenate([idx, dense_extension(q, self.index, idx, self.k)])
        return idx, scores[idx], n


def dominant_corpus(doc_ids: list[str], top: int = 10) -> str:
    """The corpus (doc-id prefix) most of the first `top` candidates come from; ties go to the best-ranked."""
    return Counter(d.split("/", 1)[0] for d in doc_ids[:top]).most_common(1)[0][0]


class LtrFusionReranker:
    kind = "ltr_fusion"

    def __init__(self, spec, collection, experts: list[Expert] | None = None, reference: np.ndarray | None = None):
        from autooptimizer.search.model_store import ModelSpec
        from autooptimizer.search.rerankers import build_reranker

        self.spec = spec
        self.collection = collection
        self.params = LtrParams.model_validate(spec.params)
        folder = Path(spec.resolved_encoder_path()) if spec.encoder_path else None
        self.experts = experts if experts is not None else [Expert(e, folder) for e in self.params.experts]
        if reference is None:
            ref_path = (folder or Path(".")) / self.params.reference_file
            if folder is None or not ref_path.is_file():
                raise NotFoundError(f"Reference embeddings {ref_path} are missing.", "Re-train the model version.")
            with np.load(ref_path) as z:
                reference = z["q"]
        self.reference = reference
        self.fallback_spec = ModelSpec.model_validate(self.params.fallback)
        if self.fallback_spec.version == spec.version:
            raise InputError("An ltr_fusion version cannot fall back to itself.", "Set `fallback` to the parent spec.")
        self.fallback = build_reranker(self.fallback_spec, collection)
        self._rm3 = None
        self._encoder = None
        self._matrix: np.ndarray | None = None
        self._own: dict[int, DenseIndex] = {}
        self._memo = threading.local()
        self._lock = threading.Lock()

    # -- shared resources ------------------------------------------------------------------------------------------
    @property
    def encoder(self):
        """The base encoder, held from the first use on (see bi_encoder.BiEncoderReranker.encoder)."""
        if self._encoder is None:
            from autooptimizer.search.encoder import get_encoder

            self._encoder = get_encoder(None, self.params.max_seq_length)
        return self._encoder

    def held(self) -> list[object] | None:
        """The process-cached objects this reranker and its fallback hold (None: the fallback does not say)."""
        fallback = getattr(self.fallback, "held", None)
        if fallback is None:
            return None
        return [*(x for x in (self._encoder, self._matrix) if x is not None), *fallback()]

    def warm(self, progress: bool = True) -> None:
        from autooptimizer.search.embeddings import doc_embeddings

        self.fallback.warm(progress=progress)
        self._matrix = doc_embeddings(self.collection, self.encoder, progress=progress)
        for i, e in enumerate(self.experts):
            if e.p.enabled and e.p.dense_candidates:
                self.own_index(i)
        owned = {d for e in self.experts if e.p.enabled for d in e.p.domains}
        if owned:  # an expert's queries take RM3 feedback from its own corpus: tokenize it now, not per request
            for doc_id in self.collection.doc_ids:
                if doc_id.split("/", 1)[0] in owned:
                    self.rm3.doc_terms(doc_id, self.collection.text(doc_id))

    @property
    def matrix(self) -> np.ndarray:
        if self._matrix is None:
            self.warm(progress=False)
        assert self._matrix is not None
        return self._matrix

    @property
    def rm3(self) -> Rm3:
        with self._lock:
            if self._rm3 is None:
                from autooptimizer.search.pipeline import get_bm25

                self._rm3 = Rm3(get_bm25(self.collection))
            return self._rm3

    def query_vector(self, query: str) -> np.ndarray:
        """The query's base embedding, encoded once per request although the candidate stage and the scorer both
        use it (a one-entry memo per thread: the encoder's own cache may be off, as when serving cost is timed). The
        scorer ends the request (`_end_request`): a replayed query must pay its encoding again, as the encoder's
        LRU under `query_cache_off()` does, or a cost measurement reads it free without `encode_cached` saying so."""
        memo = self._memo
        if getattr(memo, "query", None) != query:
            memo.vector = self.encoder.encode([query])[0]
            memo.query = query
        return memo.vector

    def _end_request(self) -> None:
        self._memo.query = None

    def own_index(self, i: int) -> DenseIndex:
        """The corpus expert `i`'s dense candidates come from (`dense_rows`), indexed once: the first request builds
        it (a graph: seconds on npl) while the others wait, not each its own."""
        with self._lock:
            got = self._own.get(i)
        if got is None:
            matrix = self.matrix  # first: unwarmed, this warms, which indexes every expert's corpus
            with self._lock:
                got = self._own.get(i)
                if got is None:
                    rows = dense_rows(self.collection, self.experts[i].p)
                    got = self._own[i] = DenseIndex(rows, matrix[rows])
        return got

    def extra_candidates(self, query: str, doc_ids: list[str], rows: np.ndarray) -> np.ndarray:
        """Rows to add to BM25's candidates (`doc_ids` at `rows`, first-stage order) for this query: the dense
        extension of the expert it routes to (`ExpertParams.dense_candidates`); none when the parent serves it, the
        expert is disabled or has none, or BM25 found nothing to route by."""
        none = np.zeros(0, dtype=np.int64)
        if not doc_ids or not any(e.p.enabled and e.p.dense_candidates for e in self.experts):
            return none
        i = self.route(self.query_vector(query) if self.routes_by_query else None, doc_ids)
        if i is None or not self.experts[i].p.enabled or not self.experts[i].p.dense_candidates:
            return none
        return dense_extension(self.query_vector(query), self.own_index(i), rows, self.experts[i].p.dense_candidates)

    # -- routing ---------------------------------------------------------------------------------------------------
    @property
    def routes_by_query(self) -> bool:
        """Whether some expert is gated by its classifier on the query embedding (else provenance decides)."""
        return any(not e.p.domains and e.gate_w is not None for e in self.experts)

    def route(self, q: np.ndarray | None, doc_ids: list[str] | None = None) -> int | None:
        """Index of the expert serving this query, or None for the fallback (parent) ranking. With the candidates
        (first-stage order), an expert owning their corpus serves it and experts owning another corpus are out;
        experts without a corpus of their own compete by their classifier's probability (skipped when `q` is None:
        the caller only passes None when no expert routes by query)."""
        corpus = dominant_corpus(doc_ids) if doc_ids else None
        best, best_p = None, self.params.gate_min_probability
        for i, e in enumerate(self.experts):
            if e.p.domains and corpus is not None:
                if corpus in e.p.domains:
                    best, best_p = i, np.inf
                continue
            if e.gate_w is None or q is None:
                continue
            p = 1.0 / (1.0 + np.exp(-(float(q @ e.gate_w) + e.p.gate_bias)))
            if p >= best_p:
                best, best_p = i, p
        return best

    def rm3_for(self, expert: Expert, query: str, doc_ids: list[str], bm25_scores: np.ndarray) -> np.ndarray:
        rows = np.array([self.collection.index_of[d] for d in doc_ids], dtype=np.int64)
        top = np.argsort(-np.asarray(bm25_scores), kind="stable")[: expert.p.rm3_docs]
        docs = [(doc_ids[i], self.collection.text(doc_ids[i])) for i in top]
        weights = self.rm3.expanded(query, docs, np.asarray(bm25_scores)[top], expert.p.rm3_terms,
                                    expert.p.rm3_lambda, idf=expert.p.rm3_idf)
        return self.rm3.scores(weights, rows)

    def bm25_tuned(self, expert: Expert, query: str, doc_ids: list[str]) -> np.ndarray | None:
        p = expert.p
        if p.bm25_k1 is None:
            return None
        return self.rm3.bm25_with(query, [(d, self.collection.text(d)) for d in doc_ids], p.bm25_k1, p.bm25_b,
                             p.bm25_avgdl)

    def features(self, expert: Expert, query: str, q: np.ndarray, doc_ids: list[str], bm25_scores: np.ndarray,
                 exclude_memory: int | None = None) -> np.ndarray:
        vecs = self.matrix[[self.collection.index_of[d] for d in doc_ids]]
        rm3 = self.rm3_for(expert, query, doc_ids, bm25_scores)
        return expert_features(expert, q, doc_ids, vecs, bm25_scores, rm3, exclude_memory,
                               self.bm25_tuned(expert, query, doc_ids))

    def _fallback_scores(self, query: str, doc_ids: list[str], bm25_scores: np.ndarray,
                         rerank: np.ndarray | None) -> np.ndarray:
        """The parent's fused ranking over its own depth; deeper candidates follow in BM25 order below it."""
        from autooptimizer.search.pipeline import fuse

        bm = np.asarray(bm25_scores, dtype=np.float64)
        depth = min(self.fallback_spec.rerank_depth, len(doc_ids))
        order = np.lexsort((np.arange(len(bm)), -bm))
        head, tail = order[:depth], order[depth:]
        out = np.empty(len(doc_ids), dtype=np.float64)
        if rerank is None:
            rerank = self.fallback.score(query, [doc_ids[i] for i in head], bm[head]) \
                if self.fallback_spec.fusion_weight > 0 else None
        fused = fuse(bm[head], rerank, self.fallback_spec.fusion_weight)
        out[head] = fused - fused.min() + 1.0 if len(fused) else fused
        out[tail] = -np.arange(1, len(tail) + 1, dtype=np.float64) / (len(tail) + 1)
        return out

    def score_with(self, query: str, q: np.ndarray, doc_ids: list[str], bm25_scores: np.ndarray) -> np.ndarray:
        if not doc_ids:
            return np.zeros(0, dtype=np.float32)
        i = self.route(q, doc_ids)
        if i is None:
            return self._fallback_scores(query, doc_ids, bm25_scores, None).astype(np.float32)
        e = self.experts[i]
        if not e.p.enabled:
            return self._fallback_scores(query, doc_ids, bm25_scores, None).astype(np.float32)
        return (self.features(e, query, q, doc_ids, bm25_scores) @ e.weights).astype(np.float32)

    def score(self, query: str, doc_ids: list[str], bm25_scores: np.ndarray) -> np.ndarray:
        """Serving cost: when provenance alone routes the query to the parent, the query is encoded once, by the
        parent, exactly as the champion does; it is encoded here only for an expert or a query-gated route."""
        try:
            if doc_ids and not self.routes_by_query:
                i = self.route(None, doc_ids)
                if i is None or not self.experts[i].p.enabled:
                    return self._fallback_scores(query, doc_ids, bm25_scores, None).astype(np.float32)
            return self.score_with(query, self.query_vector(query), doc_ids, bm25_scores)
        finally:
            self._end_request()

    def score_many(self, queries: list[str], doc_ids: list[list[str]], bm25_scores: list[np.ndarray] | None = None
                   ) -> list[np.ndarray]:
        self._end_request()  # the candidate stage's last query: the batch encodes its own
        qv = self.encoder.encode(queries)
        if bm25_scores is None:
            bm = self.rm3.bm25
            bm25_scores = [np.asarray(bm.scores(t))[[self.collection.index_of[d] for d in ids]] if ids else
                           np.zeros(0) for t, ids in zip(queries, doc_ids, strict=True)]
        return [self.score_with(t, q, ids, s) for t, q, ids, s in zip(queries, qv, doc_ids, bm25_scores, strict=True)]


@register("ltr_fusion")
def build(spec, collection) -> LtrFusionReranker:
    return LtrFusionReranker(spec, collection)
