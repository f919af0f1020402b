"""A bounded, stepped, open-loop HTTP load generator (httpx + asyncio) for `autoopt bench search`.

Open loop: request i of a step is due at start + i / rate whatever happened to the earlier ones, and its latency is
measured from that due time, so a server that falls behind shows the queueing it causes (a closed loop would wait
and under-report it: "coordinated omission"). Bounded: at most `max_in_flight` requests are outstanding (a due
request beyond that is counted `dropped`, not sent), each has a `timeout`, and a step stops sending after
`seconds` and waits at most `timeout` for the stragglers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from pydantic import BaseModel, Field


class StepResult(BaseModel):
    offered_rps: float
    seconds: float
    sent: int
    ok: int
    errors: int
    dropped: int = Field(description="due while max_in_flight requests were outstanding: not sent")
    achieved_rps: float = Field(description="successful responses per second of the step")
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    server_p50_ms: float | None = Field(default=None, description="the service's own latency_ms, median")
    client_cpu_ms_per_request: float | None = None


def percentiles(latencies_ms: list[float]) -> tuple[float | None, float | None, float | None]:
    """(p50, p95, p99) by linear interpolation (numpy's default), None for no samples."""
    if not latencies_ms:
        return None, None, None
    p = np.percentile(np.asarray(latencies_ms, dtype=np.float64), [50, 95, 99])
    return round(float(p[0]), 2), round(float(p[1]), 2), round(float(p[2]), 2)


def summarize(offered: float, seconds: float, records: list[tuple[bool, float, float | None]], dropped: int,
              cpu_s: float | None = None) -> StepResult:
    """records: (ok, latency from due time in ms, server latency_ms or None) per sent request."""
    ok = [r for r in records if r[0]]
    p50, p95, p99 = percentiles([r[1] for r in ok])
    server = [r[2] for r in ok if r[2] is not None]
    return StepResult(
        offered_rps=offered, seconds=round(seconds, 2), sent=len(records), ok=len(ok), errors=len(records) - len(ok),
        dropped=dropped, achieved_rps=round(len(ok) / seconds, 1) if seconds > 0 else 0.0,
        p50_ms=p50, p95_ms=p95, p99_ms=p99, server_p50_ms=percentiles(server)[0],
        client_cpu_ms_per_request=None if cpu_s is None or not records else round(1000 * cpu_s / len(records), 3),
    )


def saturated(step: StepResult, p95_limit_ms: float = 1000.0) -> bool:
    """The server no longer keeps up: under 90 % of the offered rate answered, any drop, errors over 1 %, or a p95
    over `p95_limit_ms` (queueing grows without bound past saturation in an open loop)."""
    if step.sent == 0:
        return True
    return (step.achieved_rps < 0.9 * step.offered_rps or step.dropped > 0 or step.errors > 0.01 * step.sent
            or (step.p95_ms is not None and step.p95_ms > p95_limit_ms))


async def _step(client: Any, url: str, queries: Callable[[], str], rate: float, seconds: float, timeout: float,
                max_in_flight: int) -> StepResult:
    records: list[tuple[bool, float, float | None]] = []
    in_flight = 0
    dropped = 0

    async def one(q: str, due: float) -> None:
        nonlocal in_flight
        try:
            r = await client.get(url, params={"q": q, "k": 10}, timeout=timeout)
            done = time.perf_counter()
            server = r.json().get("latency_ms") if r.status_code == 200 else None
            records.append((r.status_code == 200, (done - due) * 1000, server))
        except Exception:  # a timeout or a refused connection is an error of this step, never a crash of the bench
            records.append((False, (time.perf_counter() - due) * 1000, None))
        finally:
            in_flight -= 1

    tasks: list[asyncio.Task[None]] = []
    cpu0 = time.process_time()
    start = time.perf_counter()
    n = int(rate * seconds)
    for i in range(n):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if in_flight >= max_in_flight:
            dropped += 1
            continue
        in_flight += 1
        tasks.append(asyncio.create_task(one(queries(), due)))
    if tasks:
        await asyncio.wait(tasks, timeout=timeout + 1)
    elapsed = max(time.perf_counter() - start, seconds)
    return summarize(rate, elapsed, records, dropped, time.process_time() - cpu0)


def run_steps(url: str, queries: Callable[[], str], rates: list[float], seconds: float, timeout: float = 5.0,
              max_in_flight: int = 256, stop_after_saturation: int = 1,
              on_step: Callable[[StepResult], None] | None = None) -> list[StepResult]:
    """GET `url`?q=... at each rate for `seconds`; stops `stop_after_saturation` steps after the first saturated
    one (a server past saturation only queues more)."""
    import httpx

    async def main() -> list[StepResult]:
        out: list[StepResult] = []
        limits = httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight)
        async with httpx.AsyncClient(limits=limits) as client:
            over = 0
            for rate in rates:
                step = await _step(client, url, queries, rate, seconds, timeout, max_in_flight)
                out.append(step)
                if on_step:
                    on_step(step)
                if saturated(step):
                    over += 1
                    if over > stop_after_saturation:
                        break
                await asyncio.sleep(1.0)  # let the queue drain between steps
        return out

    return asyncio.run(main())
