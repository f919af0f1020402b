"""A short soak on tiny data, for real: Prometheus, the search service and `autoopt serve` as processes, the packaged
`ci` timeline at speed 2 (about 75 s of timeline). The harness plays every event; the cycles come from the scheduler."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autooptimizer.infra.net import port_open
from autooptimizer.soak.harness import SoakHarness, SoakOptions
from autooptimizer.soak.report import write_report
from autooptimizer.soak.scenario import load_scenario


@pytest.mark.prometheus
def test_tiny_soak_plays_the_timeline_measures_and_stops_everything(tmp_path: Path, autoopt_home: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOOPT_THREADS", "1")
    sc = load_scenario("ci", check_data=False)
    opts = SoakOptions(speed=2.0, run_dir=tmp_path / "run", tiny_data=True, sample_seconds=5, resource_seconds=3,
                       heartbeat_seconds=30, supervisor_wait_seconds=10, fault_grace_seconds=3)
    lines: list[str] = []
    harness = SoakHarness(sc, opts, say=lines.append)
    rec = harness.run()

    assert rec.error is None, (rec.error, lines[-10:])
    played = [e for e in rec.events if e.get("kind") != "phase"]
    # in the order they ended (restarts and supervisor waits run beside the timeline); the switch adds its "off"
    assert sorted(e["kind"] for e in played) == sorted([e.kind for e in sc.events] + ["kill_switch"])
    assert not [e for e in rec.events if "error" in e], rec.events
    restart = next(e for e in played if e["kind"] == "service_restart")
    assert restart["serving"] == restart["desired"]
    switch = [e for e in played if e["kind"] == "kill_switch"]
    assert [e["on"] for e in switch] == [True, False] and all(e["answer"]["status"] == 200 for e in switch)

    # traffic: the error burst failed requests inside its window; nothing was lost outside the faults
    assert rec.totals["sent"] > 300 and rec.totals["failed_injected"] > 0 and rec.totals["failed_lost"] == 0
    assert {"tiny-orig", "tiny-dom"} <= {d for s in rec.traffic for d in s.ndcg}
    assert len(rec.resources) >= 8
    down = [r.t for r in rec.resources if not r.rss_bytes.get("search")]  # only while the service restarted
    assert all(restart["t"] - 0.5 <= t <= restart["t"] + restart["down_seconds"] + 3.5 for t in down), (down, restart)

    # the cycles are the scheduler's, as the journal recorded them
    from autooptimizer.loop.journal import Journal
    from autooptimizer.settings import get_settings

    journal = [c for c in Journal(get_settings()).list(100) if c.started_at >= rec.t0_epoch - 1]
    assert sorted(c.id for c in rec.cycles) == sorted(c.id for c in journal)
    assert any(c.trigger == "schedule" for c in rec.cycles)
    assert not any(c.trigger not in ("schedule", "gate") for c in rec.cycles)  # the harness started none

    report, json_path, html_path = write_report(rec)
    assert json.loads(json_path.read_text())["invariants"] == report["invariants"]
    inv = report["invariants"]
    for name in ("aliases_agree", "audit_verify", "no_lost_requests", "journal_closed", "original_not_regressed"):
        assert inv[name]["pass"], (name, inv[name])
    kill = next(e for e in played if e["kind"] == "optimizer_kill")
    assert kill["restarted_by"] == "supervisor" and kill["new_pid"] != kill["pid"], kill
    assert inv["optimizer_recovered"]["pass"] and inv["optimizer_recovered"]["value"] == ["supervisor"]
    assert html_path.read_text().count("data:image/svg+xml;base64,") == 3

    # everything it started is stopped, and the kill switch is off again
    for url in (rec.setup["search_url"], rec.setup["prometheus_url"], rec.setup["optimizer_url"]):
        assert not port_open("127.0.0.1", int(url.rsplit(":", 1)[1])), url
    from autooptimizer.policies.killswitch import kill_switch

    assert not kill_switch.is_on()
