"""The four gates against the real Prometheus and the real search service (tiny corpus, 5 s windows).

One stack for the module: the service (in-process uvicorn, BM25-fused model over a 60-doc union collection), a real
Prometheus scraping it every second, and the simulator replaying the healthy dataset at 20 req/s. Each test injects
one fault through the service's admin API, waits for its gate to fire, clears it and waits for ok again.
"""

from __future__ import annotations

import json
import time

import pytest
from support.live_stack import wait_gate, write_shift_datasets, write_test_profile

from autooptimizer.gates import GateReport, evaluate_gates
from autooptimizer.infra.prometheus import prometheus_binary
from autooptimizer.profiles import load_profile
from autooptimizer.settings import get_settings

pytestmark = pytest.mark.prometheus


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory):
    prometheus_binary()  # a missing binary fails here with the install command (the marker deselects these tests)
    from autooptimizer.infra.stack import LocalStack
    from autooptimizer.search.app import SearchService, create_app
    from autooptimizer.search.beir import Collection, load_beir
    from autooptimizer.search.model_store import ModelSpec
    from autooptimizer.simulator import Scenario, Simulator, load_workload

    tmp = tmp_path_factory.mktemp("live")
    mp = pytest.MonkeyPatch()
    mp.setenv("AUTOOPT_HOME", str(tmp / "home"))
    mp.setenv("AUTOOPT_PROFILES_DIR", str(write_test_profile(tmp / "profiles")))
    get_settings.cache_clear()
    good, bad = write_shift_datasets(tmp / "data")
    profile = load_profile("dev")
    collection = Collection([load_beir(good), load_beir(bad)])
    spec = ModelSpec(version="tiny-bm25", kind="bm25", fusion_weight=0.5, rerank_depth=20)
    service = SearchService(collection, spec)
    stack = LocalStack(service="thread", app=create_app(service), profile=profile, root=tmp / "prom").start()
    sim = None
    try:
        before = evaluate_gates(prometheus_url=stack.prometheus_url, profile=profile)
        scenario = Scenario(datasets=[str(good)], rate=20, duration=600, split=None, seed=1)
        sim = Simulator(scenario, stack.search_url, workload=load_workload([good, bad], split=None))
        sim.start()
        yield {"stack": stack, "profile": profile, "sim": sim, "before": before, "service": service}
    finally:
        if sim is not None:
            sim.stop()
            sim.join(20)
        stack.stop()
        mp.undo()
        get_settings.cache_clear()


def _inject(url: str, body: dict) -> None:
    import httpx

    httpx.post(f"{url}/admin/faults", json=body, timeout=5).raise_for_status()


def _clear(url: str) -> None:
    import httpx

    httpx.delete(f"{url}/admin/faults", timeout=5).raise_for_status()


def test_all_unknown_before_any_traffic(live) -> None:
    before: GateReport = live["before"]
    assert [g.status for g in before.gates] == ["unknown"] * 4
    assert all(g.evidence.promql for g in before.gates)


def test_healthy_traffic_gates_ok(live) -> None:
    url, profile = live["stack"].prometheus_url, live["profile"]
    for name in ("p95_latency", "cost_budget", "retries", "ndcg_drop"):
        gate, _ = wait_gate(url, profile, name, "ok", timeout=40)
        assert gate.value is not None and gate.evidence.raw
    p95 = evaluate_gates(prometheus_url=url, profile=profile).gate("p95_latency")
    assert p95.value is not None and p95.value < 800


def test_latency_gate_fires_and_recovers(live) -> None:
    url, profile, svc = live["stack"].prometheus_url, live["profile"], live["stack"].search_url
    _inject(svc, {"latency_ms": 1500, "duration_s": 30})
    gate, took = wait_gate(url, profile, "p95_latency", "firing", timeout=20)
    assert gate.value is not None and gate.value > 800
    assert gate.threshold == 800
    _clear(svc)
    gate, _ = wait_gate(url, profile, "p95_latency", "ok", timeout=30)
    assert gate.value < 800


def test_cost_gate_fires_and_recovers(live) -> None:
    url, profile, svc = live["stack"].prometheus_url, live["profile"], live["stack"].search_url
    ok_value = wait_gate(url, profile, "cost_budget", "ok")[0].value
    _inject(svc, {"cost_multiplier": 5000, "duration_s": 30})
    gate, _ = wait_gate(url, profile, "cost_budget", "firing", timeout=20)
    assert gate.value > 80 > ok_value
    _clear(svc)
    wait_gate(url, profile, "cost_budget", "ok", timeout=30)


def test_retries_gate_fires_and_recovers(live) -> None:
    url, profile, svc = live["stack"].prometheus_url, live["profile"], live["stack"].search_url
    _inject(svc, {"retries": {"operation": "rerank", "count": 3}, "duration_s": 30})
    gate, _ = wait_gate(url, profile, "retries", "firing", timeout=20)
    assert gate.value > 3
    assert "rerank" in json.dumps(gate.evidence.raw)
    _clear(svc)
    gate, _ = wait_gate(url, profile, "retries", "ok", timeout=30)
    assert gate.value <= 3


def test_ndcg_gate_fires_on_corpus_shift_and_recovers(live) -> None:
    url, profile, sim = live["stack"].prometheus_url, live["profile"], live["sim"]
    wait_gate(url, profile, "ndcg_drop", "ok", timeout=30)
    sim.shift("bad")
    gate, _ = wait_gate(url, profile, "ndcg_drop", "firing", timeout=20)
    assert gate.value >= 3.0
    sim.shift("good")
    wait_gate(url, profile, "ndcg_drop", "ok", timeout=30)
    stats = sim.snapshot()
    assert stats.ndcg_by_dataset["good"] > stats.ndcg_by_dataset["bad"] + 0.4
    assert stats.feedback_ok > 0 and stats.feedback_errors == 0


def test_ndcg_anchor_keeps_firing_after_the_baseline_slid(live, tmp_path) -> None:
    """The soak's failure on the real Prometheus: W + baseline (15 s) after a shift to the bad domain the sliding
    comparison reads no drop again; the anchor set at a healthy reading keeps the gate firing until traffic returns."""
    from autooptimizer.loop.anchor import AnchorStore

    url, profile, sim = live["stack"].prometheus_url, live["profile"], live["sim"]
    store = AnchorStore(tmp_path / "ndcg_anchor.json", champion=lambda: "tiny-bm25")
    deadline = time.monotonic() + 40
    while store.read().state != "set":  # healthy readings until one anchors (the scheduler's rule)
        assert time.monotonic() < deadline, store.describe()
        store.observe(evaluate_gates(prometheus_url=url, profile=profile, anchor=store.read()), busy=False)
        time.sleep(0.5)
    level = store.read().level
    sim.shift("bad")
    wait_gate(url, profile, "ndcg_drop", "firing", timeout=20)
    deadline = time.monotonic() + 60
    while True:
        sliding = evaluate_gates(prometheus_url=url, profile=profile).gate("ndcg_drop")
        gate = evaluate_gates(prometheus_url=url, profile=profile, anchor=store.read()).gate("ndcg_drop")
        if sliding.status != "firing" and gate.evidence.anchor and gate.evidence.anchor.fired_by == ["anchor"]:
            break
        assert time.monotonic() < deadline, f"sliding {sliding.model_dump_json()}; anchored {gate.model_dump_json()}"
        time.sleep(0.5)
    assert gate.status == "firing" and gate.value is not None and gate.value > 20
    assert gate.evidence.anchor.anchor_ndcg10 == level and store.read().level == level  # a drop never re-anchors
    sim.shift("good")
    deadline = time.monotonic() + 40
    while evaluate_gates(prometheus_url=url, profile=profile, anchor=store.read()).gate("ndcg_drop").status != "ok":
        assert time.monotonic() < deadline, "the anchored gate did not return to ok on the good domain"
        time.sleep(0.5)


def test_every_gate_unknown_while_prometheus_is_down(live) -> None:
    stack, profile = live["stack"], live["profile"]
    url = stack.prometheus_url
    stack.prometheus.stop()
    report = evaluate_gates(prometheus_url=url, profile=profile)
    assert [g.status for g in report.gates] == ["unknown"] * 4
    assert all("unreachable" in (g.evidence.error or "") for g in report.gates)
