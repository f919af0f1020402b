"""The post-deploy watch compares the new version with the old one on the same traffic mix (the A/B control arm),
not with samples from before a corpus shift."""

from __future__ import annotations

import numpy as np

from autooptimizer.loop.abtest import ABConfig, ArmSnapshot
from autooptimizer.loop.watch import watch_deployment

SHIFT_AT, AB_START, DEPLOY = 1000.0, 1100.0, 1130.0


class _Log:
    """The old version scored ~0.85 on the original traffic before the shift and ~0.40 on the shifted traffic after;
    the new version scores ~0.55 on the shifted traffic."""

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.rows = [(t, "old", float(np.clip(rng.normal(0.85 if t < SHIFT_AT else 0.40, 0.1), 0, 1)))
                     for t in np.arange(400.0, DEPLOY, 0.5)]
        self.new = list(np.clip(rng.normal(0.55, 0.1, 200), 0, 1))

    def samples(self, version: str, since: float, until: float | None = None) -> list[float]:
        return [v for t, ver, v in self.rows if ver == version and since <= t < (until or 1e12)]

    def snapshot(self, version: str, since: float) -> ArmSnapshot:
        return ArmSnapshot(ndcg=self.new if version == "new" else [], p95_latency_ms=40.0, error_rate=0.0)

    @property
    def feedback(self) -> _Log:
        return self


def _watch(baseline_since: float | None) -> dict:
    clock = iter(np.arange(DEPLOY, DEPLOY + 100, 1.0))
    return watch_deployment(_Log(), new="new", old="old", seconds=5, config=ABConfig(min_samples=20), since=DEPLOY,
                            baseline_since=baseline_since, clock=lambda: float(next(clock)), sleep=lambda _s: None)


def test_baseline_from_the_ab_start_sees_the_improvement() -> None:
    res = _watch(AB_START)
    assert not res["degraded"], res["reasons"]
    assert res["baseline_mean_ndcg"] < 0.45 and res["mean_ndcg"] > 0.5


def test_a_baseline_reaching_before_the_shift_would_call_the_fix_a_degradation() -> None:
    res = _watch(None)  # the default lookback (15 min) mixes in the pre-shift traffic
    assert res["degraded"] and res["baseline_mean_ndcg"] > 0.6
