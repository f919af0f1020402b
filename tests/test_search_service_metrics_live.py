"""No blind spot for a new series, and no decision on too little data: a real Prometheus scraping a real SearchService.

Each test starts its own stack (tiny corpus, BM25-only versions, 1 s scrape, 10 s gate windows) so no earlier burst is
still inside a window. Requests are sent by the test, so the counts are known. Prometheus' `increase()` extrapolates
to the end of its window by at most 1.1 average sample intervals and, for a counter that starts at 0, not before its
first sample: K increments read between K and K * (1 + 1.1 * interval / sampled span). Right after a start the span
can be a single interval, so the provable bound is [K, 2.1 K]; each reading was 0 (or nothing) before the fix.

Before the fix (series created on their first increment) the retries gate read `ok` at 0 or `unknown` after each
burst, and the canary's error rate read 0 or nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.live_stack import wait_gate

from autooptimizer.gates import evaluate_gates
from autooptimizer.infra.prometheus import prometheus_binary
from autooptimizer.profiles import load_profile
from autooptimizer.promql import query as query_metrics
from autooptimizer.search import metric_names as M
from autooptimizer.settings import get_settings

pytestmark = pytest.mark.prometheus

PROFILE = """\
name: dev
gates: {windowSeconds: 10, baselineWindowSeconds: 10, maxRetries: 3,
        minSamples: {ndcgDrop: 50, p95Latency: 5, costBudget: 5, retries: 10}}
cost: {pricePerComputeSecond: 0.0005, budget: 5.0}
"""
QUERIES = {"heart": "heart failure cardiac", "soil": "soil erosion", "ocean": "ocean acidification coral reef"}


class LiveService:
    """A SearchService on a fixed port that can be restarted (a new process' state: a fresh metrics registry)."""

    def __init__(self, root: Path) -> None:
        from autooptimizer.infra.net import free_port
        from autooptimizer.search.beir import Collection, load_beir
        from autooptimizer.search.sample_data import write_tiny_beir

        self.collection = Collection([load_beir(write_tiny_beir(root / "tiny"), name="tiny")])
        self.port = free_port()
        self.server: Any = None
        self.service: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LiveService:
        from autooptimizer.infra.stack import UvicornThread
        from autooptimizer.search.app import SearchService, create_app

        self.service = SearchService(self.collection, "tiny-a", api_token="")
        self.server = UvicornThread(create_app(self.service), port=self.port).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def search(self, n: int, expect: int = 200) -> list[dict]:
        out = []
        for i in range(n):
            r = httpx.get(f"{self.url}/search", params={"q": list(QUERIES.values())[i % 3], "k": 5}, timeout=10)
            assert r.status_code == expect, r.text
            out.append(r.json())
        return out

    def fault(self, body: dict) -> None:
        httpx.post(f"{self.url}/admin/faults", json={"duration_s": 60, **body}, timeout=5).raise_for_status()

    def clear(self) -> None:
        httpx.delete(f"{self.url}/admin/faults", timeout=5).raise_for_status()


@pytest.fixture()
def live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    prometheus_binary()
    from autooptimizer.infra.stack import LocalStack
    from autooptimizer.search import model_store
    from autooptimizer.search.model_store import ModelSpec

    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "dev.yaml").write_text(PROFILE)
    monkeypatch.setenv("AUTOOPT_PROFILES_DIR", str(tmp_path / "profiles"))
    get_settings.cache_clear()
    for v in ("tiny-a", "tiny-b", "tiny-c"):
        model_store.save(ModelSpec(version=v, kind="bm25", fusion_weight=0.0, rerank_depth=10))
    svc = LiveService(tmp_path).start()
    profile = load_profile("dev")
    stack = None
    try:
        stack = LocalStack(service="external", search_url=svc.url, profile=profile, root=tmp_path / "prom").start()
        yield {"svc": svc, "stack": stack, "prom": stack.prometheus_url, "profile": profile}
    finally:
        if stack is not None:
            stack.stop()
        svc.stop()
        get_settings.cache_clear()


def scalar(url: str, promql: str) -> float | None:
    res = query_metrics(promql, url)
    return res.samples[0]["value"] if res.ok and res.samples else None


def wait_value(url: str, promql: str, want: float, timeout: float = 20.0) -> None:
    """Poll until Prometheus' latest answer to `promql` is `want` (a scrape has seen what the test did)."""
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        got = scalar(url, promql)
        if got == want:
            return
        time.sleep(0.25)
    raise AssertionError(f"{promql} = {got}, want {want} within {timeout}s")


def burst(svc: LiveService, operation: str, per_request: int, requests: int, plain: int) -> None:
    """`requests` searches that each retry `operation` `per_request` times, then `plain` searches without fault."""
    svc.fault({"retries": {"operation": operation, "count": per_request}})
    svc.search(requests)
    svc.clear()
    svc.search(plain)


def retries_gate_fires(live: dict[str, Any], operation: str, retries: int, requests: int) -> None:
    wait_value(live["prom"], f"sum({M.REQUESTS_TOTAL})", float(requests))  # Prometheus has scraped every request
    gate, _ = wait_gate(live["prom"], live["profile"], "retries", "firing", timeout=15)
    assert gate.threshold == 3 and retries <= gate.value <= 2.1 * retries
    by_op = {s["metric"]["operation"]: float(s["value"][1]) for s in gate.evidence.raw}
    assert set(by_op) == {"bm25", "rerank"}  # both operations are series, the quiet one at 0
    assert by_op[operation] == gate.value and max(v for k, v in by_op.items() if k != operation) == 0.0
    assert requests <= gate.evidence.samples["requests"] <= 2.1 * requests


def test_retry_series_exist_at_zero_from_the_first_scrape(live) -> None:
    for op in ("bm25", "rerank"):
        assert scalar(live["prom"], f'{M.RETRIES_TOTAL}{{operation="{op}"}}') == 0.0


def test_a_burst_of_six_retries_right_after_start_fires_the_gate(live) -> None:
    """The incident: 6 retries (threshold 3) read `ok` at 0 for 30 s."""
    burst(live["svc"], "rerank", per_request=3, requests=2, plain=10)
    retries_gate_fires(live, "rerank", retries=6, requests=12)


def test_the_smallest_burst_above_the_threshold_on_the_other_operation(live) -> None:
    burst(live["svc"], "bm25", per_request=2, requests=2, plain=10)
    retries_gate_fires(live, "bm25", retries=4, requests=12)


def test_after_a_restart_the_first_retries_are_seen(live) -> None:
    svc, prom = live["svc"], live["prom"]
    svc.stop()
    down = time.time()
    svc.start()  # a new process' state: a fresh registry, every counter starts again
    wait_value(prom, f'up{{job="search"}} * (timestamp(up{{job="search"}}) > bool {down:.3f})', 1.0)  # scraped
    burst(svc, "bm25", per_request=2, requests=3, plain=9)
    retries_gate_fires(live, "bm25", retries=6, requests=12)


def _canary(svc: LiveService, version: str, prom: str) -> None:
    """Load `version` as a canary taking all traffic; return once Prometheus holds 5 zero samples of its errors."""
    r = httpx.post(f"{svc.url}/admin/models", json={"stable": "tiny-a", "canary": version, "canary_weight": 1.0},
                   timeout=30)
    assert r.status_code == 200, r.text
    wait_value(prom, f'count_over_time({M.ERRORS_TOTAL}{{model_version="{version}"}}[30s])', 5.0)


# The guard asks for errors and requests in two queries, each at its own instant and so with its own extrapolation
# (loop/signals.py): the ratio of K errors to R requests reads within 1.1 / 4 sampled intervals of K / R.
GUARD_REL = 0.3


def test_the_error_guard_sees_the_first_errors_of_a_fresh_canary(live) -> None:
    from autooptimizer.loop.signals import PrometheusGuards

    svc, prom = live["svc"], live["prom"]
    guards = PrometheusGuards(prom)
    since = time.time()
    _canary(svc, "tiny-b", prom)
    svc.fault({"error_rate": 1.0})
    svc.search(3, expect=500)  # the incident: three HTTP 500s read as an error rate of 0.0
    wait_value(prom, f'sum({M.REQUESTS_TOTAL}{{model_version="tiny-b"}})', 3.0)
    assert guards.read("tiny-b", since).error_rate == pytest.approx(1.0, rel=GUARD_REL)
    svc.clear()
    svc.search(3)
    wait_value(prom, f'sum({M.REQUESTS_TOTAL}{{model_version="tiny-b"}})', 6.0)
    assert guards.read("tiny-b", since).error_rate == pytest.approx(0.5, rel=GUARD_REL)
    # the next canary: its own series from its load, its first error counted; tiny-b's numbers are untouched
    since_c = time.time()
    _canary(svc, "tiny-c", prom)
    svc.fault({"error_rate": 1.0})
    svc.search(1, expect=500)
    svc.clear()
    svc.search(3)
    wait_value(prom, f'sum({M.REQUESTS_TOTAL}{{model_version="tiny-c"}})', 4.0)
    assert guards.read("tiny-c", since_c).error_rate == pytest.approx(0.25, rel=GUARD_REL)
    assert guards.read("tiny-b", since).error_rate == pytest.approx(0.5, rel=GUARD_REL)


def feedback(svc: LiveService, n: int) -> None:
    """`n` searches, each followed by its feedback (the first document of the query's topic is relevant)."""
    topics = list(QUERIES)
    for i in range(n):
        topic = topics[i % 3]
        hit = httpx.get(f"{svc.url}/search", params={"q": QUERIES[topic], "k": 5}, timeout=10).json()
        r = httpx.post(f"{svc.url}/feedback", json={"query": QUERIES[topic], "model_version": hit["model_version"],
                                                    "request_id": hit["request_id"],
                                                    "judgments": {f"tiny/{topic}0": 2}}, timeout=5)
        assert r.status_code == 200, r.text


FEEDBACK_NOW = f"floor(sum(increase({M.FEEDBACK_NDCG}_count[10s])))"
FEEDBACK_BEFORE = f"floor(sum(increase({M.FEEDBACK_NDCG}_count[10s] offset 10s)))"


def test_ndcg_gate_on_twelve_feedback_samples_reads_unknown_with_the_count(live) -> None:
    svc, prom = live["svc"], live["prom"]
    wait_value(prom, FEEDBACK_BEFORE, 0.0)  # the zero series has been scraped for a whole baseline window
    feedback(svc, 12)
    wait_value(prom, f"sum({M.FEEDBACK_NDCG}_count)", 12.0)
    gate = evaluate_gates(prometheus_url=prom, profile=live["profile"]).gate("ndcg_drop")
    assert gate.status == "unknown" and gate.value is None and gate.evidence.min_samples == 50
    current = gate.evidence.samples["current"]
    assert 12 <= current <= 15 and gate.evidence.samples["baseline"] == 0.0
    assert gate.evidence.error == f"{current:.0f} feedback samples in the current window (10s), need 50 " \
                                  "(gates.minSamples)"


def test_the_incident_twelve_samples_in_the_baseline_window(live) -> None:
    """Plenty of feedback now, but the baseline window holds only the 12 samples sent before: still unknown."""
    svc, prom = live["svc"], live["prom"]
    wait_value(prom, FEEDBACK_BEFORE, 0.0)
    feedback(svc, 12)
    deadline = time.monotonic() + 30
    while (scalar(prom, FEEDBACK_BEFORE) or 0) < 12 and time.monotonic() < deadline:  # the 12 move to the baseline
        time.sleep(0.25)
    feedback(svc, 60)
    wait_value(prom, f"sum({M.FEEDBACK_NDCG}_count)", 72.0)
    gate = evaluate_gates(prometheus_url=prom, profile=live["profile"]).gate("ndcg_drop")
    base, now = gate.evidence.samples["baseline"], gate.evidence.samples["current"]
    assert 12 <= base <= 15 and 50 <= now <= 75, gate.evidence.samples
    assert gate.status == "unknown"
    assert gate.evidence.error == f"{base:.0f} feedback samples in the baseline window (10s), need 50 " \
                                  "(gates.minSamples)"
