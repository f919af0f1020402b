"""Encoder settings: the truncation length and thread count are honoured, and vectors are cached per encoder identity
(a change of length never mixes vectors); the query cache returns the vectors it would compute; stages are timed."""

from __future__ import annotations

import math

import numpy as np
import pytest

from autooptimizer.infra import cpu
from autooptimizer.search import embeddings, model_store, stages
from autooptimizer.search.beir import Collection, load_beir
from autooptimizer.search.embeddings import EmbeddingStore, count_cached, doc_embeddings
from autooptimizer.search.encoder import Encoder, encoder_identity, get_encoder
from autooptimizer.search.model_store import ModelSpec
from autooptimizer.search.pipeline import SearchPipeline
from autooptimizer.search.sample_data import write_tiny_beir
from autooptimizer.settings import get_settings


@pytest.fixture
def collection(tmp_path):
    return Collection([load_beir(write_tiny_beir(tmp_path / "tiny", docs_per_topic=2), name="tiny")])


def test_each_length_embeds_into_its_own_cache_and_truncates(collection):
    short, full = get_encoder(None, 8), get_encoder(None, 64)
    assert short.model.max_seq_length == 8 and full.model.max_seq_length == 64
    assert (short.identity, full.identity) == ("minilm-base-msl8", "minilm-base-msl64")

    a = doc_embeddings(collection, short, progress=False)
    assert count_cached(collection, short.identity) == len(collection)
    assert count_cached(collection, full.identity) == 0  # nothing leaked into the other length's cache
    b = doc_embeddings(collection, full, progress=False)
    assert EmbeddingStore(short.identity).dir != EmbeddingStore(full.identity).dir
    cos = np.sum(a * b, axis=1)
    assert cos.max() < 0.999  # every tiny doc is longer than 8 tokens: truncation changed every vector
    texts = [collection.text(d) for d in collection.doc_ids]
    assert np.allclose(a, short.encode(texts), atol=1e-5) and np.allclose(b, full.encode(texts), atol=1e-5)


def test_a_version_serves_with_its_own_length(collection):
    spec = ModelSpec(version="v-short", fusion_weight=0.5, rerank_depth=10, params={"max_seq_length": 8})
    model_store.save(spec)
    pipe = SearchPipeline(spec, collection).warm(progress=False)
    assert pipe.reranker.encoder.identity == "minilm-base-msl8"
    assert count_cached(collection, "minilm-base-msl8") == len(collection)
    assert count_cached(collection, encoder_identity(None)) == 0


def test_bootstrap_length_is_part_of_the_version(tmp_path):
    from autooptimizer.search.bootstrap import bootstrap

    root = write_tiny_beir(tmp_path / "sf", with_split=True)
    short = bootstrap(seed=1, dataset=str(root), progress=False, max_seq_length=16)
    longer = bootstrap(seed=1, dataset=str(root), progress=False, max_seq_length=32)
    assert short.version != longer.version
    assert model_store.load(short.version).params == {"max_seq_length": 16}
    assert (short.max_seq_length, longer.max_seq_length) == (16, 32)


@pytest.mark.parametrize("others,cores,want", [
    (0.0, 2, 2), (0.2, 2, 2), (0.3, 2, 1), (1.0, 2, 1), (3.5, 2, 1), (-1.0, 2, 2),
    (0.0, 1, 1), (3.9, 16, 12), (math.nan, 2, 1), (math.inf, 2, 1),
])
def test_threads_for_known_loads(others, cores, want):
    assert cpu.threads_for(others, cores) == want


def test_threads_default_to_the_idle_cores_and_a_setting_wins(monkeypatch):
    monkeypatch.setattr(cpu, "usable_cores", lambda: 2)
    monkeypatch.setattr(cpu.os, "getloadavg", lambda: (0.1, 0.5, 0.5))
    get_settings.cache_clear()
    assert get_settings().threads == 2 and get_settings().threads_auto
    monkeypatch.setattr(cpu.os, "getloadavg", lambda: (1.7, 0.5, 0.5))
    get_settings.cache_clear()
    assert get_settings().threads == 1
    monkeypatch.setenv("AUTOOPT_THREADS", "2")
    get_settings.cache_clear()
    assert get_settings().threads == 2 and not get_settings().threads_auto


def test_governor_counts_only_other_processes(monkeypatch):
    """Busy CPU machine-wide minus this process's own: the encoder's own threads never read as someone else."""
    clock = {"t": 0.0, "busy": 100.0, "own": 10.0}
    monkeypatch.setattr(cpu.time, "monotonic", lambda: clock["t"])
    monkeypatch.setattr(cpu, "busy_seconds", lambda: clock["busy"])
    monkeypatch.setattr(cpu, "_own_seconds", lambda: clock["own"])
    gov = cpu.ThreadGovernor(start=1, cores=2)
    assert gov.next() == 1  # no interval yet: the start value
    clock.update(t=10.0, busy=120.0, own=30.0)  # 2 cores busy for 10 s, all of it ours
    assert gov.next() == 2
    clock.update(t=20.0, busy=140.0, own=42.0)  # 20 busy seconds, 12 ours: others used 0.8 core
    assert gov.next() == 1
    assert gov.history == [(0.0, 2), (0.8, 1)]


def test_explicit_threads_are_kept_through_a_long_encode(collection, monkeypatch):
    import torch

    monkeypatch.setenv("AUTOOPT_THREADS", "1")
    get_settings.cache_clear()
    monkeypatch.setattr(embeddings, "SHARD_SIZE", 3)
    calls: list[int] = []
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (calls.append(n), real(n)))
    enc = Encoder(None, 16)
    assert calls == [1] and torch.get_num_threads() == 1
    doc_embeddings(collection, enc, progress=False)
    assert calls == [1]  # no governor when the setting is explicit


def test_auto_threads_follow_the_governor_between_shards(collection, monkeypatch):
    import torch

    monkeypatch.setattr(embeddings, "SHARD_SIZE", 3)
    decisions = iter([1, 2, 1, 2, 1])
    monkeypatch.setattr(cpu.ThreadGovernor, "next", lambda self: next(decisions))
    enc = Encoder(None, 16)
    before = torch.get_num_threads()
    calls: list[int] = []
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (calls.append(n), real(n)))
    doc_embeddings(collection, enc, progress=False)  # 12 docs: 4 shards
    assert calls == [1, 2, 1, 2, before]  # one decision per shard, then the thread count it found


def test_query_cache_returns_the_computed_vector_and_is_bounded(monkeypatch):
    monkeypatch.setenv("AUTOOPT_QUERY_CACHE", "2")
    get_settings.cache_clear()
    enc = Encoder(None, 32)
    fresh = enc._encode(["coral reef"], 1)
    first = enc.encode(["coral reef"])
    again = enc.encode(["coral reef"])
    assert np.array_equal(first, fresh) and np.array_equal(again, fresh)
    again[0, 0] = 99.0  # a caller's copy: the cache is not mutated through it
    assert np.array_equal(enc.encode(["coral reef"]), fresh)
    enc.encode(["heart failure"])
    enc.encode(["wing flutter"])
    assert list(enc._queries) == ["heart failure", "wing flutter"]


def test_query_cache_off(monkeypatch):
    monkeypatch.setenv("AUTOOPT_QUERY_CACHE", "0")
    get_settings.cache_clear()
    enc = Encoder(None, 32)
    enc.encode(["coral reef"])
    assert not enc._queries


def _spy(monkeypatch, enc, seen: list[str]) -> None:
    """Record every text `enc` runs through its model (the real forward pass still runs)."""
    real = enc._encode
    monkeypatch.setattr(enc, "_encode", lambda texts, batch_size: seen.extend(texts) or real(texts, batch_size))


def test_query_cache_off_skips_the_lru_on_its_own_thread_only(monkeypatch):
    import threading

    from autooptimizer.search.encoder import query_cache_off

    monkeypatch.setenv("AUTOOPT_QUERY_CACHE", "8")
    get_settings.cache_clear()
    enc = get_encoder(None, 24)
    enc.encode(["coral reef"])
    seen: list[str] = []
    _spy(monkeypatch, enc, seen)
    with query_cache_off():  # a cost measurement: every query pays its encoding
        enc.encode(["coral reef"])
        other = threading.Thread(target=enc.encode, args=(["coral reef"],))  # a request on another thread
        other.start()
        other.join()
        late = get_encoder(None, 20)  # loaded inside the block (the old block only covered encoders loaded before)
        late_seen: list[str] = []
        _spy(monkeypatch, late, late_seen)
        late.encode(["wing flutter"])
        late.encode(["wing flutter"])
    assert seen == ["coral reef"], "the measuring thread computed it; the other thread's request kept its LRU"
    assert late_seen == ["wing flutter", "wing flutter"] and "wing flutter" not in late._queries
    enc.encode(["coral reef"])
    assert seen == ["coral reef"] and enc.query_cache_size == 8 == late.query_cache_size, "after it: the LRU again"


def test_each_query_vector_counts_as_computed_or_cached_on_the_request_clock(monkeypatch):
    from autooptimizer.search.encoder import query_cache_off

    monkeypatch.setenv("AUTOOPT_QUERY_CACHE", "8")
    get_settings.cache_clear()
    enc = get_encoder(None, 24)
    stages.begin()
    enc.encode(["sea ice"])
    enc.encode(["sea ice"])
    with query_cache_off():
        enc.encode(["sea ice"])
    enc.encode(["sea ice", "rain"])  # a batch never goes through the LRU
    assert set(stages.end()) == {"encode"}  # the seconds still go to the encode stage alone
    assert stages.events() == {"encoded": 4, "encode_cached": 1}
    enc.encode(["sea ice"])  # no clock after end(): nothing counted
    assert stages.events() == {"encoded": 4, "encode_cached": 1}


def test_overlapping_blocks_in_threads_never_switch_each_other_off_or_on(monkeypatch):
    """Two measurements at once (a cycle's and an operator's): the first to end must not turn the LRU back on under
    the second, and the last to end must not leave it off (the old save/restore of query_cache_size did both)."""
    import threading

    from autooptimizer.search.encoder import query_cache_off

    monkeypatch.setenv("AUTOOPT_QUERY_CACHE", "8")
    get_settings.cache_clear()
    enc = get_encoder(None, 24)
    enc.encode(["heart failure"])
    first_in, first_may_end = threading.Event(), threading.Event()

    def first() -> None:
        with query_cache_off():
            first_in.set()
            first_may_end.wait(30)

    t = threading.Thread(target=first)
    t.start()
    assert first_in.wait(30)
    seen: list[str] = []
    _spy(monkeypatch, enc, seen)
    with query_cache_off():
        first_may_end.set()
        t.join()  # the first block ended inside this one
        enc.encode(["heart failure"])
    assert seen == ["heart failure"], "this block still bypassed the LRU after the other ended"
    enc.encode(["heart failure"])
    assert seen == ["heart failure"] and enc.query_cache_size == 8, "both ended: the LRU serves again"


def test_negative_query_cache_names_the_setting(monkeypatch):
    from autooptimizer.errors import ConfigError
    from autooptimizer.settings import load_settings

    monkeypatch.setenv("AUTOOPT_QUERY_CACHE", "-1")
    with pytest.raises(ConfigError, match="AUTOOPT_QUERY_CACHE"):
        load_settings()


def test_search_stages_are_timed_only_under_a_clock(collection):
    spec = ModelSpec(version="v-a", fusion_weight=0.5, rerank_depth=10)
    pipe = SearchPipeline(spec, collection).warm(progress=False)
    pipe.search("coral reef", 3)  # no clock: nothing recorded, nothing fails
    assert stages.end() == {}
    stages.begin()
    pipe.search("wing flutter supersonic", 3)
    spent = stages.end()
    assert set(spent) == {"bm25", "encode", "rerank", "fusion"} and all(v >= 0 for v in spent.values())
    stages.begin()
    SearchPipeline(ModelSpec(version="b", kind="bm25", fusion_weight=0.0), collection).search("coral", 3)
    assert set(stages.end()) == {"bm25", "rerank", "fusion"}  # BM25 alone encodes nothing
