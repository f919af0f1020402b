"""`autoopt bench encode`: encoder docs/s per (torch threads, max_seq_length), side by side, and optionally each
length's SciFact NDCG@10 (fusion weight chosen on train, test read once).

Side by side: the sample is cut into rounds and every round runs each setting once, in an order rotated per round,
so a burst of other work on the shared box hits all settings alike; docs/s is total docs / total seconds per setting.
The run also reports how many cores other processes kept busy meanwhile (infra/cpu.py), so a reader knows whether
"2 threads" ran on an idle or a busy machine.
"""

from __future__ import annotations

import random
import time

from pydantic import BaseModel, Field

from autooptimizer.search.bootstrap import FusionFit


class EncodeRow(BaseModel):
    threads: int
    max_seq_length: int
    docs: int
    seconds: float
    docs_per_s: float
    round_docs_per_s: list[float] = Field(description="per round, to show the spread")


class LengthQuality(BaseModel):
    max_seq_length: int
    encoder: str = Field(description="encoder identity: the embedding cache it used")
    corpus_encode_seconds: float = Field(description="0 when the cache already held every vector")
    fit: FusionFit


class EncodeBench(BaseModel):
    dataset: str
    sample_docs: int
    rounds: int
    others_cores: float | None = Field(description="CPU other processes used during the throughput part, in cores")
    load_1min: tuple[float, float] = Field(description="1-min load average before and after")
    rows: list[EncodeRow]
    quality: list[LengthQuality] = Field(default_factory=list)


def _load1() -> float:
    import os

    return round(os.getloadavg()[0], 2)


def throughput(dataset: str, docs: int, threads: list[int], lengths: list[int], rounds: int, seed: int = 0
               ) -> tuple[list[EncodeRow], float | None, tuple[float, float]]:
    """docs/s of each (threads, length) over the same seeded sample of documents, interleaved in `rounds`."""
    import torch

    from autooptimizer.infra.cpu import ThreadGovernor
    from autooptimizer.search.beir import load_collection
    from autooptimizer.search.encoder import Encoder

    col = load_collection([dataset])
    ids = random.Random(seed).sample(col.doc_ids, min(docs, len(col.doc_ids)))
    texts = [col.text(d) for d in ids]
    encoders = {n: Encoder(None, n) for n in lengths}
    for enc in encoders.values():
        enc.encode(texts[:8])  # first-call allocation, not timed
    settings = [(t, n) for t in threads for n in lengths]
    spent = {s: 0.0 for s in settings}
    per_round: dict[tuple[int, int], list[float]] = {s: [] for s in settings}
    chunks = [texts[i::rounds] for i in range(rounds)]
    load0 = _load1()
    probe = ThreadGovernor(start=1, min_interval_s=0.0)
    for r, chunk in enumerate(chunks):
        for t, n in settings[r % len(settings):] + settings[: r % len(settings)]:
            torch.set_num_threads(t)
            t0 = time.perf_counter()
            encoders[n].encode(chunk)
            dt = time.perf_counter() - t0
            spent[(t, n)] += dt
            per_round[(t, n)].append(round(len(chunk) / dt, 1))
    others = probe.others()
    rows = [EncodeRow(threads=t, max_seq_length=n, docs=len(texts), seconds=round(spent[(t, n)], 2),
                      docs_per_s=round(len(texts) / spent[(t, n)], 1), round_docs_per_s=per_round[(t, n)])
            for t, n in settings]
    return rows, None if others is None else round(others, 2), (load0, _load1())


def quality(dataset: str, length: int, progress: bool = True) -> LengthQuality:
    """Embed the corpus at `length` (cached per encoder identity) and fit the fusion weight as the bootstrap does."""
    from autooptimizer.search.beir import Collection, load_beir
    from autooptimizer.search.bootstrap import RERANK_DEPTH, fit_fusion_weight
    from autooptimizer.search.embeddings import count_cached
    from autooptimizer.search.encoder import encoder_identity
    from autooptimizer.search.model_store import ModelSpec
    from autooptimizer.search.pipeline import SearchPipeline
    from autooptimizer.settings import get_settings

    root = get_settings().dataset(dataset)
    name = root.name
    collection = Collection([load_beir(root, name=name)])
    spec = ModelSpec(version=f"bench-msl{length}", kind="bi_encoder", fusion_weight=0.5, rerank_depth=RERANK_DEPTH,
                     params={"max_seq_length": length})
    pipe = SearchPipeline(spec, collection)
    identity = encoder_identity(None, length)
    todo = len(collection) - count_cached(collection, identity)
    t0 = time.perf_counter()
    pipe.warm(progress=progress)
    encode_s = round(time.perf_counter() - t0, 1) if todo else 0.0
    fit = fit_fusion_weight(pipe, load_beir(root, split="train", name=name), load_beir(root, split="test", name=name),
                            name)
    return LengthQuality(max_seq_length=length, encoder=identity, corpus_encode_seconds=encode_s, fit=fit)


def run(dataset: str, docs: int, threads: list[int], lengths: list[int], rounds: int, ndcg: bool,
        progress: bool = True) -> EncodeBench:
    rows, others, load = throughput(dataset, docs, threads, lengths, rounds)
    out = EncodeBench(dataset=dataset, sample_docs=rows[0].docs if rows else 0, rounds=rounds, others_cores=others,
                      load_1min=load, rows=rows)
    if ndcg:
        out.quality = [quality(dataset, n, progress) for n in lengths]
    return out
