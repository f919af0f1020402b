"""The open-loop load generator: percentiles, saturation, and bounded steps against a real server of known capacity."""

from __future__ import annotations

import asyncio

import pytest
from fastapi import FastAPI

from autooptimizer.infra.loadgen import StepResult, percentiles, run_steps, saturated, summarize
from autooptimizer.infra.stack import UvicornThread


def test_percentiles_known_answers():
    assert percentiles([]) == (None, None, None)
    assert percentiles([float(x) for x in range(1, 101)]) == (50.5, 95.05, 99.01)
    assert percentiles([7.0]) == (7.0, 7.0, 7.0)


def test_summarize_counts_ok_errors_and_rate():
    records = [(True, 10.0, 4.0), (True, 30.0, 6.0), (False, 5000.0, None), (True, 20.0, None)]
    s = summarize(50.0, 2.0, records, dropped=1, cpu_s=0.004)
    assert (s.sent, s.ok, s.errors, s.dropped) == (4, 3, 1, 1)
    assert s.achieved_rps == 1.5 and s.p50_ms == 20.0 and s.server_p50_ms == 5.0
    assert s.client_cpu_ms_per_request == 1.0


def _step(**kw) -> StepResult:
    base = dict(offered_rps=100, seconds=5, sent=500, ok=500, errors=0, dropped=0, achieved_rps=99.0, p50_ms=5.0,
                p95_ms=20.0, p99_ms=30.0)
    return StepResult(**{**base, **kw})


@pytest.mark.parametrize("kw,want", [
    ({}, False), ({"achieved_rps": 89.0}, True), ({"dropped": 1}, True), ({"errors": 6, "ok": 494}, True),
    ({"errors": 5, "ok": 495}, False), ({"p95_ms": 1500.0}, True), ({"sent": 0, "ok": 0}, True),
])
def test_saturation_rule(kw, want):
    assert saturated(_step(**kw)) is want


@pytest.fixture
def slow_server():
    """One request at a time, 50 ms each: at most 20 req/s."""
    app = FastAPI()
    gate = asyncio.Semaphore(1)

    @app.get("/search")
    async def search(q: str, k: int = 10) -> dict:
        async with gate:
            await asyncio.sleep(0.05)
        return {"latency_ms": 50.0, "q": q}

    server = UvicornThread(app).start()
    yield server
    server.stop()


def test_steps_are_open_loop_bounded_and_find_saturation(slow_server):
    seen: list[StepResult] = []
    queries = iter(str(i) for i in range(10_000))
    steps = run_steps(slow_server.url + "/search", lambda: next(queries), [4, 100, 200, 300], seconds=2.0,
                      timeout=1.0, max_in_flight=30, stop_after_saturation=1, on_step=seen.append)
    assert len(steps) == 3 and seen == steps  # stops one step after the first saturated one
    low, high, _ = steps
    assert low.sent + low.dropped == 8 and low.ok == 8 and not saturated(low)
    assert high.sent + high.dropped == 200  # every due request is sent or counted as dropped, never lost
    assert high.dropped > 0 and saturated(high)  # 100 offered/s against a 20/s server: the queue hits the bound
    assert high.achieved_rps < 50
