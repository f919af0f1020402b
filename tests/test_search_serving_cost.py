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
