"""The traffic simulator against the real search service (in-process uvicorn, tiny corpus)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError
from support.live_stack import write_shift_datasets
from typer.testing import CliRunner

from autooptimizer.errors import InputError
from autooptimizer.simulator import FaultSpec, Scenario, Simulator, load_workload
from autooptimizer.simulator.runner import ndcg_at_10


@pytest.fixture
def service(tmp_path: Path):
    from autooptimizer.infra.stack import UvicornThread
    from autooptimizer.search.app import SearchService, create_app
    from autooptimizer.search.beir import Collection, load_beir
    from autooptimizer.search.model_store import ModelSpec

    good, bad = write_shift_datasets(tmp_path / "data")
    svc = SearchService(Collection([load_beir(good), load_beir(bad)]),
                        ModelSpec(version="tiny-bm25", kind="bm25", fusion_weight=0.5, rerank_depth=20))
    server = UvicornThread(create_app(svc)).start()
    yield {"url": server.url, "good": good, "bad": bad, "svc": svc}
    server.stop()


def test_scenario_is_bounded() -> None:
    assert Scenario(rate=10, duration=5).max_requests == 51
    assert Scenario(rate=10, duration=5, max_requests=7).max_requests == 7
    assert Scenario(rate=10, duration=5, max_requests=10_000).max_requests == 51
    for bad in ({"rate": 0}, {"rate": 500}, {"duration": 0}, {"duration": 7200}, {"datasets": []}):
        with pytest.raises(ValidationError):
            Scenario(**bad)
    with pytest.raises(ValidationError):
        FaultSpec(kind="meteor")


def test_refuses_non_loopback_targets(tmp_path: Path) -> None:
    good, _ = write_shift_datasets(tmp_path)
    for url in ("http://192.168.1.10:8700", "http://search.example.com"):
        with pytest.raises(InputError, match="loopback"):
            Simulator(Scenario(datasets=[str(good)], split=None), url)


def test_ndcg_at_10_known_answer() -> None:
    assert ndcg_at_10(["a", "b"], {"a": 1}) == 1.0
    assert ndcg_at_10(["x", "a"], {"a": 1}) == pytest.approx(1 / 1.5849625, rel=1e-6)
    assert ndcg_at_10(["x"], {"a": 2}) == 0.0


@pytest.mark.parametrize("served, judgments, want", [
    # a repeated document counts once (the old formula counted it twice: 1.24, above 1)
    (["a", "a", "b"], {"a": 1, "b": 1}, (1 + 1 / 2) / (1 + 1 / 1.5849625007)),
    # a negative grade counts 0 (the old formula subtracted it: 0.13)
    (["b", "a"], {"a": 2, "b": -1}, (2 / 1.5849625007) / 2),
    (["b", "b", "a", "c"], {"a": 2, "b": -3, "c": 1}, (2 / 2 + 1 / 2.3219280949) / (2 + 1 / 1.5849625007)),
    (["x"], {"b": -1}, 0.0),  # nothing relevant: 0, where the service logs None
])
def test_ndcg_is_the_services_on_repeats_and_negative_grades(served, judgments, want) -> None:
    from autooptimizer.search.metrics_eval import ndcg10_ranking

    assert ndcg_at_10(served, judgments) == pytest.approx(want, rel=1e-9)
    assert ndcg_at_10(served, judgments) == (ndcg10_ranking(served, judgments) or 0.0)


def test_run_replays_with_feedback_and_shifts(service) -> None:
    sc = Scenario(datasets=[str(service["good"])], shift_to=str(service["bad"]), shift_at=1.0, rate=20,
                  duration=2.0, split=None)
    t = time.monotonic()
    stats = Simulator(sc, service["url"]).run()
    assert time.monotonic() - t < 6
    assert stats.sent + stats.dropped <= sc.max_requests == 41
    assert stats.ok == stats.sent >= 30 and stats.errors == 0
    assert stats.feedback_ok == stats.ok and stats.feedback_errors == 0
    assert stats.by_dataset["good"] > 10 and stats.by_dataset["bad"] > 10 and stats.active == ["bad"]
    assert stats.ndcg_by_dataset["good"] > stats.ndcg_by_dataset["bad"] + 0.4
    log = [json.loads(line) for line in service["svc"].feedback_log.read_text().splitlines()]
    assert len(log) == stats.feedback_ok
    assert {r["model_version"] for r in log} == {"tiny-bm25"} and all(r["ndcg10"] is not None for r in log)
    assert {r["query_id"].split("/")[0] for r in log} == {"good", "bad"}
    # the simulator names each /search request_id, so the service logs that request's server latency
    assert len({r["request_id"] for r in log}) == len(log) and all(r["latency_ms"] > 0 for r in log)


def test_max_requests_bounds_the_run(service) -> None:
    stats = Simulator(Scenario(datasets=[str(service["good"])], rate=50, duration=30, max_requests=5, split=None),
                      service["url"]).run()
    assert stats.sent == 5 and stats.elapsed_s < 2


def test_error_fault_is_injected_counted_and_cleared(service) -> None:
    fault = FaultSpec(kind="errors", error_rate=1.0, at=0.0, duration=60)
    sc = Scenario(datasets=[str(service["good"])], rate=20, duration=1.5, split=None, fault=fault)
    stats = Simulator(sc, service["url"]).run()
    assert stats.faults and "error" not in stats.faults[0] and stats.faults[0]["answer"]["error_rate"] == 1.0
    assert stats.errors == stats.sent > 0 and stats.ok == 0 and "500" in stats.last_error
    # the run ended before the fault's 60 s: the simulator cleared it, the service serves again
    assert httpx.get(service["url"] + "/admin/state").json()["faults"] == []
    assert httpx.get(service["url"] + "/search", params={"q": "coral reef"}).status_code == 200


def test_fault_payloads_are_accepted_by_the_service(service) -> None:
    from autooptimizer.simulator import clear_faults, inject_fault

    for kind in ("latency", "errors", "cost", "retries"):
        answer = inject_fault(service["url"], FaultSpec(kind=kind, duration=5))
        assert answer["duration_s"] == 5
    active = httpx.get(service["url"] + "/admin/state").json()["active_faults"]
    assert active["latency_ms"] == 1500 and active["error_rate"] == 0.5 and active["cost_multiplier"] == 50
    assert active["retries"] == {"rerank": 3}
    assert clear_faults(service["url"])["cleared"] == 4


def test_workload_uses_train_split_and_prefixed_ids(tmp_path: Path) -> None:
    from autooptimizer.search.sample_data import write_tiny_beir

    root = write_tiny_beir(tmp_path / "split", with_split=True)
    wl = load_workload([root], split="train")
    qs = wl.queries["split"]
    assert {q.query_id for q in qs} == {"q-heart", "q-wing", "q-ocean"}  # the train half only
    assert all(all(d.startswith("split/") for d in q.judgments) for q in qs)
    assert [wl.next("split").query_id for _ in range(4)][3] == wl.queries["split"][0].query_id  # cycles


def test_cli_simulate_json(service) -> None:
    from autooptimizer.cli import app

    out = CliRunner().invoke(app, ["simulate", "--datasets", str(service["good"]), "--rate", "20", "--duration", "1",
                                   "--split", "", "--target", service["url"], "--json"])
    assert out.exit_code == 0, out.output
    stats = json.loads(out.stdout)
    assert stats["ok"] >= 10 and stats["errors"] == 0
    bad = CliRunner().invoke(app, ["simulate", "--target", "http://8.8.8.8:80", "--json"])
    assert bad.exit_code != 0
