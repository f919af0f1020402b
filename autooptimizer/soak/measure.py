"""What a soak measures, and the arithmetic over it. Nothing here decides anything for the product.

- traffic, per window: requests sent / ok / failed (failed inside an injected fault's window, or lost), the mean
  online NDCG@10 per domain of what was served, the client-side p95, and cost per 1K requests from the service's own
  Prometheus counters (`autoopt_cost_dollars_total` / `autoopt_search_requests_total`);
- resources: disk under AUTOOPT_HOME, RSS of each long-lived process (with its children), registered model
  versions, audit log bytes;
- cycles: read from the product's journal (trigger, gate, outcome), never inferred from the traffic.
"""

from __future__ import annotations

import contextlib
import math
import os
import stat
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from autooptimizer.simulator.runner import RequestResult


class TrafficSample(BaseModel):
    """One window of traffic; `t` is wall seconds since the run started (the window's end)."""

    t: float
    sim_t: float
    phase: str
    mix: list[str]
    sent: int = 0
    ok: int = 0
    failed: int = 0
    failed_injected: int = Field(default=0, description="failures inside an injected fault's window")
    failed_lost: int = Field(default=0, description="failures outside every injected fault: lost requests")
    dropped: int = Field(default=0, description="ticks the simulator could not send: `concurrency` requests were "
                                                "already in flight (offered load the service did not take)")
    ndcg: dict[str, float] = Field(default_factory=dict, description="domain -> mean online NDCG@10")
    ndcg_n: dict[str, int] = Field(default_factory=dict)
    p95_ms: float | None = None
    cost_per_1k: float | None = None
    fault: bool = Field(default=False, description="an injected fault overlapped this window")
    versions_served: dict[str, int] = Field(default_factory=dict, description="model version -> requests")


class ResourceSample(BaseModel):
    t: float
    disk_bytes: int
    rss_bytes: dict[str, int] = Field(default_factory=dict, description="process role -> RSS of its tree")
    versions: int | None = None
    audit_bytes: int = 0
    disk_by_folder: dict[str, int] = Field(default_factory=dict, description="top-level folder of the home -> bytes")


class CycleRow(BaseModel):
    """One cycle as the journal recorded it; times are wall seconds since the run started."""

    id: str
    trigger: str | None = None
    gate: str | None = None
    status: str | None = None
    outcome: str | None = None
    reason: str | None = None
    t_start: float
    t_end: float | None = None
    retrained: bool = False
    domain: str | None = None
    artifacts_dir: str | None = None


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (the simulator's definition); None when empty."""
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


class FaultWindows:
    """Wall-clock (monotonic) intervals during which failures are expected: an injected fault, plus `grace` seconds
    for requests already in flight when it ended."""

    def __init__(self, grace: float = 5.0) -> None:
        self.grace = grace
        self._spans: list[list[float]] = []
        self._lock = threading.Lock()

    def open(self, start: float, end: float | None = None) -> int:
        with self._lock:
            self._spans.append([start, math.inf if end is None else end])
            return len(self._spans) - 1

    def close(self, index: int, end: float) -> None:
        with self._lock:
            self._spans[index][1] = end

    def covers(self, t: float) -> bool:
        with self._lock:
            return any(a <= t <= b + self.grace for a, b in self._spans)

    def overlaps(self, a: float, b: float) -> bool:
        with self._lock:
            return any(s <= b and a <= e + self.grace for s, e in self._spans)


class TrafficLog:
    """Collects the simulator's per-request results (its `on_result` hook) and cuts them into windows."""

    def __init__(self, faults: FaultWindows) -> None:
        self.faults = faults
        self._pending: list[RequestResult] = []
        self._lock = threading.Lock()
        self.totals = {"sent": 0, "ok": 0, "failed": 0, "failed_injected": 0, "failed_lost": 0, "dropped": 0}
        self.lost_examples: list[str] = []

    def add(self, result: RequestResult) -> None:
        with self._lock:
            self._pending.append(result)

    def cut(self, *, t: float, sim_t: float, phase: str, mix: list[str], since: float, now: float,
            dropped: int = 0) -> TrafficSample:
        """The window of results that came back since the last cut (monotonic `since`..`now`); `dropped` ticks in it
        count as failed requests too: injected when an injected fault overlaps the window, lost otherwise."""
        with self._lock:
            batch, self._pending = self._pending, []
        sample = window_sample(batch, self.faults, t=t, sim_t=sim_t, phase=phase, mix=mix)
        sample.fault = self.faults.overlaps(since, now)
        if dropped:
            sample.dropped = dropped
            sample.sent += dropped
            sample.failed += dropped
            if sample.fault:
                sample.failed_injected += dropped
            else:
                sample.failed_lost += dropped
        for key in self.totals:
            self.totals[key] += getattr(sample, key)
        for r in batch:
            if not r.ok and not injected(r, self.faults) and len(self.lost_examples) < 20:
                self.lost_examples.append(f"{r.dataset}: {r.error}")
        if dropped and not sample.fault and len(self.lost_examples) < 20:
            self.lost_examples.append(f"{dropped} ticks dropped: {dropped} requests could not be sent (all in flight)")
        return sample


def injected(r: RequestResult, faults: FaultWindows) -> bool:
    """A failure is the fault's when the request was in flight during a fault window (sent .. came back), not only
    when it came back inside one: a request sent to the month soak's bad model timed out 30 s later, after its
    window and grace had closed, and 5 such were counted as lost."""
    return faults.overlaps(r.sent, r.t) if r.sent is not None else faults.covers(r.t)


def window_sample(batch: Iterable[RequestResult], faults: FaultWindows, **fields: Any) -> TrafficSample:
    """Counts, per-domain mean NDCG@10 and p95 of one window's results."""
    sample = TrafficSample(**fields)
    latencies: list[float] = []
    sums: dict[str, float] = {}
    for r in batch:
        sample.sent += 1
        if r.ok:
            sample.ok += 1
            if r.latency_ms is not None:
                latencies.append(r.latency_ms)
            if r.ndcg is not None:
                sums[r.dataset] = sums.get(r.dataset, 0.0) + r.ndcg
                sample.ndcg_n[r.dataset] = sample.ndcg_n.get(r.dataset, 0) + 1
            if r.model_version:
                sample.versions_served[r.model_version] = sample.versions_served.get(r.model_version, 0) + 1
        else:
            sample.failed += 1
            if injected(r, faults):
                sample.failed_injected += 1
            else:
                sample.failed_lost += 1
    sample.ndcg = {d: round(v / sample.ndcg_n[d], 4) for d, v in sums.items()}
    sample.p95_ms = percentile(latencies, 0.95)
    return sample


# -- resources ----------------------------------------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            text = Path(f"/proc/{pid}/task/{task}/children").read_text()
            out += [int(c) for c in text.split()]
    except OSError:
        pass
    return out


def rss_bytes(pid: int) -> int:
    """VmRSS of one process (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def tree_rss_bytes(pid: int) -> int:
    """RSS of a process and all its descendants (uvicorn workers, Prometheus' children)."""
    total, todo, seen = 0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        total += rss_bytes(p)
        todo += _children(p)
    return total


def disk_bytes(root: Path, seen: set[tuple[int, int]] | None = None) -> int:
    """Bytes of regular files under `root` (symlinks not followed: linked corpora are not the home's). A file with
    several hard links (model weights shared between versions) counts once: `seen` holds the (device, inode) pairs
    already counted, shared across calls that together measure one home."""
    seen = set() if seen is None else seen
    total = 0
    for dirpath, _dirs, files in os.walk(root, followlinks=False):
        for name in files:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            if st.st_nlink > 1:
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
            total += st.st_size
    return total


def disk_by_folder(home: Path, skip: frozenset[str] = frozenset({"soak"})) -> dict[str, int]:
    """Bytes under each top-level entry of `home` (files at the top under "."), leaving out `skip` (the harness's
    own run folders): what a disk growth is made of. A hard-linked file counts once, in the first folder met."""
    out: dict[str, int] = {}
    seen: set[tuple[int, int]] = set()
    try:
        entries = sorted(home.iterdir())
    except OSError:
        return out
    for entry in entries:
        if entry.name in skip or entry.is_symlink():
            continue
        if entry.is_dir():
            out[entry.name] = disk_bytes(entry, seen)
        else:
            with contextlib.suppress(OSError):
                out["."] = out.get(".", 0) + entry.stat().st_size
    return out


def quarter_change(points: list[tuple[float, float]]) -> float | None:
    """mean of the last quarter - mean of the second quarter, over (t, value) points split by time (as
    `quarter_growth`); None with fewer than 8 points."""
    means = _quarter_means(points)
    return None if means is None else means[1] - means[0]


def audit_bytes(home: Path) -> int:
    """Bytes of the audit trail (every segment) under AUTOOPT_HOME/audit."""
    folder = home / "audit"
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.is_dir() else 0


def versions_count() -> int | None:
    """Model versions in the model store (what the registry can serve); None when unreadable."""
    try:
        from autooptimizer.search.model_store import list_versions

        return len(list_versions())
    except Exception:  # noqa: BLE001 - unreadable is reported as None, never as 0
        return None


def cost_per_1k(prometheus_url: str, seconds: float) -> float | None:
    """Dollars per 1 000 requests over the last `seconds`, from the service's own counters; None when unreadable or
    when no request was served."""
    from autooptimizer.promql import query
    from autooptimizer.search import metric_names as m

    w = f"{max(5, int(seconds))}s"
    cost = query(f"sum(increase({m.COST_TOTAL}[{w}]))", prometheus_url).single_value()
    reqs = query(f"sum(increase({m.REQUESTS_TOTAL}[{w}]))", prometheus_url).single_value()
    if cost is None or not reqs:
        return None
    return round(1000.0 * cost / reqs, 6)


# -- cycles from the journal --------------------------------------------------------------------------------------
def read_cycles(started_after: float, t0_wall: float) -> list[CycleRow]:
    """The cycles the product's journal holds that started after `started_after` (epoch seconds)."""
    from autooptimizer.loop.journal import Journal
    from autooptimizer.settings import get_settings

    rows = []
    journal = Journal(get_settings())
    for rec in reversed(journal.list(limit=100_000)):
        if rec.started_at < started_after:
            continue
        if rec.gate == "ndcg_drop" and not rec.steps:  # the list leaves steps out; a retrain is told by its train step
            rec = journal.get(rec.id)
        steps = {s.name for s in (rec.steps or [])}
        summary = rec.summary or {}
        rows.append(CycleRow(id=rec.id, trigger=rec.trigger, gate=rec.gate, status=rec.status, outcome=rec.outcome,
                             reason=str(summary.get("reason") or "")[:300] or None,
                             t_start=round(rec.started_at - t0_wall, 2),
                             t_end=None if rec.finished_at is None else round(rec.finished_at - t0_wall, 2),
                             retrained="train" in steps,
                             domain=_cycle_domain(rec), artifacts_dir=rec.artifacts_dir))
    return rows


def _cycle_domain(rec: Any) -> str | None:
    summary = rec.summary or {}
    for key in ("domain", "domain_data"):
        if summary.get(key):
            return Path(str(summary[key])).name
    if rec.artifacts_dir:
        holdout = Path(rec.artifacts_dir) / "holdout"
        if holdout.is_dir():
            names = [p.name for p in holdout.iterdir() if p.is_dir()]
            if len(names) == 1:
                return names[0]
    return None


# -- arithmetic for the report ------------------------------------------------------------------------------------
def quarter_growth(points: list[tuple[float, float]]) -> float | None:
    """(mean of the last quarter - mean of the second quarter) / mean of the second quarter, over (t, value) points
    split by time; None with fewer than 8 points or a zero second quarter."""
    means = _quarter_means(points)
    if means is None or means[0] == 0:
        return None
    return round((means[1] - means[0]) / means[0], 4)


def _quarter_means(points: list[tuple[float, float]]) -> tuple[float, float] | None:
    """(mean of the second quarter, mean of the last quarter) by time; None with fewer than 8 points."""
    if len(points) < 8:
        return None
    t0, t1 = points[0][0], points[-1][0]
    span = t1 - t0
    if span <= 0:
        return None
    q2 = [v for t, v in points if t0 + span / 4 <= t < t0 + span / 2]
    q4 = [v for t, v in points if t >= t0 + 3 * span / 4]
    if not q2 or not q4:
        return None
    return sum(q2) / len(q2), sum(q4) / len(q4)


def weighted_mean(values: dict[str, float], weights: dict[str, float]) -> float | None:
    """Σ w·v / Σ w over the keys both have; None when no weight."""
    keys = [k for k in values if weights.get(k, 0) > 0]
    total = sum(weights[k] for k in keys)
    return round(sum(values[k] * weights[k] for k in keys) / total, 4) if total else None


def mean_ndcg(samples: list[TrafficSample], domain: str) -> tuple[float | None, int]:
    """Request-weighted mean NDCG@10 of `domain` over samples, and the request count."""
    n = sum(s.ndcg_n.get(domain, 0) for s in samples)
    if not n:
        return None, 0
    return round(sum(s.ndcg[domain] * s.ndcg_n[domain] for s in samples if domain in s.ndcg) / n, 4), n
