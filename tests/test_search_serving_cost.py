"""The ratio the promotion budget reads: the worst domain's, with sub-noise excesses counting as no excess."""

from __future__ import annotations

import pytest

from autooptimizer.search.serving_cost import NOISE_FLOOR_MS, DomainCost, budget_ratio


def _row(champion_ms: float, challenger_ms: float) -> DomainCost:
    return DomainCost(dataset="d", queries=10, champion_ms=champion_ms, challenger_ms=challenger_ms,
                      ratio=round(challenger_ms / champion_ms, 3))


def test_the_worst_domain_sets_the_ratio_when_its_excess_is_real() -> None:
    assert budget_ratio([_row(13.0, 13.5), _row(10.0, 15.0)]) == 1.5
    assert budget_ratio([_row(2.0, 2.0 + NOISE_FLOOR_MS + 0.01)]) == pytest.approx(1.255)


def test_a_sub_noise_excess_reads_as_no_excess() -> None:
    assert budget_ratio([_row(0.10, 0.13)]) == 1.0  # 1.28x on tiny data: timer noise, not a cost
    assert budget_ratio([_row(3.7, 0.66), _row(0.10, 0.13)]) == 1.0
    assert budget_ratio([_row(2.0, 2.0 + NOISE_FLOOR_MS)]) == 1.0  # at the floor: within it
    assert budget_ratio([_row(1.0, 0.5)]) == 0.5  # cheaper stays cheaper


def test_a_real_breach_elsewhere_is_not_hidden_by_a_noisy_domain() -> None:
    assert budget_ratio([_row(0.10, 0.13), _row(13.0, 26.0)]) == 2.0


def test_nothing_measured_is_an_error_not_a_pass() -> None:
    with pytest.raises(ValueError):
        budget_ratio([])


# -- the measurement itself (real MiniLM, tiny domains): the same answer whatever the process did before ---------------

QUERIES = 8


@pytest.fixture
def versions(ml_world: dict) -> tuple[str, str, list[tuple[str, str | None]]]:
    """The bi-encoder champion and a challenger sharing its encoder (as the ltr repairs do), measured on the new
    domain and the original's test split."""
    from autooptimizer.search import model_store
    from autooptimizer.search.model_store import ModelSpec

    challenger = ModelSpec(version="v2-heavier", kind="bi_encoder", fusion_weight=0.3, rerank_depth=20)
    model_store.save(challenger)
    data = ml_world["data"]
    return ml_world["parent"].version, challenger.version, [(str(data / "dom"), None), (str(data / "orig"), "test")]


def _warm_the_lru(champion: str, datasets: list[tuple[str, str | None]]) -> None:
    """What the optimizer did before the soak's measurement: serve the measured queries one by one with the query
    LRU on (the ltr challenger's evaluation encoded the original domain's test queries singly, via its fallback)."""
    from autooptimizer.search import model_store
    from autooptimizer.search.beir import load_beir, load_collection
    from autooptimizer.search.pipeline import SearchPipeline

    pipe = SearchPipeline(model_store.load(champion), load_collection([d for d, _ in datasets])).warm(progress=False)
    for name, split in datasets:
        for text in list(load_beir(name, split=split).queries.values())[:QUERIES]:
            pipe.search(text)


def test_every_timed_query_is_encoded_by_both_versions_whatever_the_process_did_before(versions) -> None:
    from autooptimizer.search.serving_cost import serving_cost

    champion, challenger, datasets = versions
    _warm_the_lru(champion, datasets)
    first = serving_cost(champion, challenger, datasets, queries=QUERIES)
    second = serving_cost(champion, challenger, datasets, queries=QUERIES)  # the soak's 3.95x came from a repeat
    for row in first + second:
        n = row.queries
        assert n == min(QUERIES, 5 if row.dataset.endswith("orig") else 20) and row.clock == "thread"
        for run in (row.champion, row.challenger):
            assert run is not None
            assert (run.searches, run.encoded, run.encode_cached, run.reranked) == (n, n, 0, n), row.dataset
            assert run.stage_ms["encode"] > 0 and {"bm25", "rerank", "fusion"} <= set(run.stage_ms)
    assert [r.dataset for r in first] == [r.dataset for r in second]


def test_a_measurement_that_read_cached_vectors_is_refused_not_read_as_a_cost(versions, monkeypatch) -> None:
    """The soak's code timed inside the warm process with the LRU on: the champion read 0.24 ms. Its own evidence now
    refuses such a figure (the promotion rule then reads the cost as unmeasured: refused, never passed)."""
    import contextlib

    from autooptimizer.search import encoder
    from autooptimizer.search.serving_cost import MeasurementError, serving_cost

    champion, challenger, datasets = versions
    _warm_the_lru(champion, datasets)
    monkeypatch.setattr(encoder, "query_cache_off", contextlib.nullcontext)  # the LRU stays on, as in the soak
    with pytest.raises(MeasurementError, match=r"read \d+ of the champion's query vectors from a cache"):
        serving_cost(champion, challenger, datasets, queries=QUERIES)


@pytest.mark.parametrize("threads,want", [(1, "thread"), (2, "process")])
def test_the_clock_is_the_threads_own_only_when_torch_computes_on_it_alone(threads: int, want: str) -> None:
    import torch

    from autooptimizer.search.serving_cost import cpu_clock

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert cpu_clock(threads) == want
        torch.set_num_threads(2)
        assert cpu_clock(threads) == "process", "torch's pool computes part of the forward pass"
    finally:
        torch.set_num_threads(before)
