"""The optimizer's own Prometheus metrics, computed at scrape time from the cycle journal, the kill switch and the
approvals store — so cycles run by any process (CLI, scheduler, API) are counted, and a restart loses nothing."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily


class _JournalCollector:
    def __init__(self, runner: Any, scheduler: Any) -> None:
        self.runner, self.scheduler = runner, scheduler

    def collect(self):  # noqa: ANN201 - prometheus_client protocol
        from autooptimizer.policies.approvals import ApprovalStore
        from autooptimizer.policies.killswitch import kill_switch

        cycles = self.runner.journal.list(limit=100000)
        by = CounterMetricFamily("autoopt_optimizer_cycles", "Finished cycles by outcome", labels=["outcome"])
        counts: dict[str, int] = {}
        for c in cycles:
            if c.status != "running":
                counts[c.outcome or "unknown"] = counts.get(c.outcome or "unknown", 0) + 1
        for outcome, n in sorted(counts.items()):
            by.add_metric([outcome], n)
        yield by
        running = GaugeMetricFamily("autoopt_optimizer_cycle_running", "1 while a cycle runs")
        running.add_metric([], 1.0 if self.runner.is_running() else 0.0)
        yield running
        done = [c for c in cycles if c.finished_at]
        last = GaugeMetricFamily("autoopt_optimizer_last_cycle_duration_seconds", "Duration of the latest cycle")
        last.add_metric([], max(done, key=lambda c: c.finished_at).duration_seconds if done else 0.0)
        yield last
        ts = GaugeMetricFamily("autoopt_optimizer_last_cycle_finished_timestamp_seconds", "When the latest cycle ended")
        ts.add_metric([], max((c.finished_at for c in done), default=0.0))
        yield ts
        rb = CounterMetricFamily("autoopt_optimizer_rollbacks", "Cycles that ended in a rollback")
        rb.add_metric([], counts.get("rolled_back", 0))
        yield rb
        ks = GaugeMetricFamily("autoopt_optimizer_kill_switch", "1 while the kill switch is on")
        ks.add_metric([], 1.0 if kill_switch.is_on() else 0.0)
        yield ks
        pending = GaugeMetricFamily("autoopt_optimizer_pending_approvals", "Approval requests waiting for a human")
        pending.add_metric([], float(len(ApprovalStore().list(status="pending"))))
        yield pending
        nxt = GaugeMetricFamily("autoopt_optimizer_next_cycle_seconds", "Seconds to the next scheduled cycle (-1: off)")
        minutes = self.scheduler.next_cycle_in_minutes()
        nxt.add_metric([], -1.0 if minutes is None else minutes * 60)
        yield nxt
        up = GaugeMetricFamily("autoopt_optimizer_scrape_timestamp_seconds", "When these metrics were computed")
        up.add_metric([], time.time())
        yield up


def render(runner: Any, scheduler: Any) -> tuple[bytes, str]:
    registry = CollectorRegistry()
    registry.register(_JournalCollector(runner, scheduler))
    return generate_latest(registry), CONTENT_TYPE_LATEST
