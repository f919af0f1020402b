"""The soak report on known inputs: before/after, counts, invariants (missing data fails), and the HTML page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autooptimizer.soak.harness import SoakOptions, SoakRecord
from autooptimizer.soak.measure import CycleRow, ResourceSample, TrafficSample
from autooptimizer.soak.report import build_report, cycle_counts, invariants, ndcg_before_after, write_html
from autooptimizer.soak.scenario import Scenario


def _s(t: float, **ndcg: float) -> TrafficSample:
    return TrafficSample(t=t, sim_t=t, phase="p", mix=list(ndcg), sent=10, ok=10, ndcg=ndcg,
                         ndcg_n={d: 10 for d in ndcg}, p95_ms=100 + t, cost_per_1k=0.01)


def _cycle(i: int, outcome: str, t_end: float, trigger: str = "schedule", retrained: bool = False) -> CycleRow:
    return CycleRow(id=f"c{i}", trigger=trigger, outcome=outcome, status="done", t_start=t_end - 1, t_end=t_end,
                    retrained=retrained)


def test_before_is_until_the_fix_and_after_is_the_last_quarter() -> None:
    samples = [_s(1, a=0.8), _s(2, a=0.8), _s(3, b=0.3), _s(4, b=0.3), _s(5, b=0.6), _s(6, b=0.6), _s(7, b=0.6),
               _s(8, b=0.6)]
    cycles = [_cycle(1, "promoted", 4.5, "gate", retrained=True)]
    out = ndcg_before_after(samples, cycles)
    assert out["b"]["before"] == 0.3 and out["b"]["requests_before"] == 20  # windows 3, 4: the fix ended at 4.5
    assert out["b"]["after"] == 0.6  # the last quarter of b's 6 windows: 1 window
    assert out["a"] == {"before": 0.8, "after": 0.8, "requests_before": 20, "requests_after": 10, "requests": 20}


def test_counts() -> None:
    cycles = [_cycle(1, "promoted", 1, "gate", True), _cycle(2, "no_action", 2), _cycle(3, "rolled_back", 3, "gate"),
              _cycle(4, "failed", 4), _cycle(5, "ab_inconclusive", 5, "cli", True)]
    c = cycle_counts(cycles)
    assert (c["cycles"], c["scheduled"], c["gate_started"], c["retrainings"]) == (5, 2, 2, 2)
    assert (c["promotions"], c["rollbacks"], c["rollbacks_pct"]) == (1, 1, 20.0)
    assert c["success_rate"] == 0.8  # the failed one is the only unclean end
    assert c["human_actions"] == 1  # the cli trigger


def _raw(**over: Any) -> dict[str, Any]:
    res = [{"t": float(t), "disk_bytes": 1000, "rss_bytes": {"search": 500, "harness": 10 * t}, "versions": 3,
            "audit_bytes": 10} for t in range(16)]
    raw = {"final": {"consistency": {"agree": True, "champion": "v2", "gold": "v1"},
                     "audit": {"ok": True, "records": 9}, "journal": {"running": [], "dirty": []},
                     "offline": {"domains": {"cran": {"best_promoted": 0.5, "final": 0.495}},
                                 "original": {"dataset": "scifact", "split": "test", "champion": 0.70, "gold": 0.705}}},
           "totals": {"sent": 100, "failed_lost": 0}, "resources": res, "events": [],
           "setup": {"gold_at_start": "v1"}}
    raw.update(over)
    return raw


def test_invariants_pass_on_a_good_run_and_ignore_the_harness_rss() -> None:
    inv = invariants(_raw())
    assert all(v["pass"] for v in inv.values()), {k: v for k, v in inv.items() if not v["pass"]}
    assert "harness" not in inv["rss_growth"]["value"]


def test_each_invariant_fails_on_its_own_breach() -> None:
    raw = _raw()
    raw["final"]["offline"]["domains"]["cran"]["final"] = 0.48  # forgot more than 0.01
    raw["final"]["offline"]["original"]["champion"] = 0.69  # original regressed more than 0.01
    raw["totals"]["failed_lost"] = 1
    raw["final"]["consistency"]["agree"] = False
    raw["resources"] = [{**r, "disk_bytes": 1000 + 100 * i} for i, r in enumerate(raw["resources"])]
    raw["events"] = [{"kind": "optimizer_kill", "restarted_by": "harness"}]
    inv = invariants(raw)
    failed = {k for k, v in inv.items() if not v["pass"]}
    assert failed == {"repaired_domains_held", "original_not_regressed", "no_lost_requests", "aliases_agree",
                      "disk_growth", "optimizer_recovered"}


def test_missing_data_never_passes() -> None:
    inv = invariants({"final": {}, "totals": {}, "resources": [], "events": []})
    assert not any(v["pass"] for k, v in inv.items()), inv
    moved = _raw(setup={"gold_at_start": "v0"})  # the gold alias moved during the run
    assert not invariants(moved)["original_not_regressed"]["pass"]


def test_report_and_html_are_self_contained(tmp_path: Path) -> None:
    sc = Scenario(name="t", schedule_every=10, original="a", phases=[{"name": "p", "duration": 16, "rate": 1,
                                                                      "mix": "a"}])
    rec = SoakRecord(scenario=sc, options=SoakOptions(), speed=1.0, run_dir=tmp_path, t0_epoch=1.0,
                     traffic=[_s(t, a=0.5) for t in range(1, 17)],
                     resources=[ResourceSample(t=t, disk_bytes=100, rss_bytes={"search": 10}) for t in range(16)],
                     cycles=[_cycle(1, "promoted", 8, "gate", True)], totals={"sent": 160, "failed": 0,
                                                                              "failed_lost": 0},
                     final=_raw()["final"], setup={"gold_at_start": "v1"})
    report = build_report(rec)
    assert report["success"]["counts"]["promotions"] == 1
    assert report["success"]["p95_ms"]["before"] is not None and report["success"]["downtime_pct"] == 0.0
    page = write_html(report, tmp_path / "r.html").read_text()
    assert page.count("data:image/svg+xml;base64,") == 3
    assert "http://" not in page and "<script" not in page  # nothing fetched from elsewhere
    assert "PASS" in page and "Success table" in page
    assert sorted(f.name for f in tmp_path.glob("soak_*.svg")) == ["soak_latency_cost.svg", "soak_ndcg.svg",
                                                                 "soak_resources.svg"]


def test_disk_growth_names_the_folders_it_came_from() -> None:
    mib = 2**20
    raw = _raw()
    raw["resources"] = [{**r, "disk_by_folder": {"models": 10 * mib + (2 * mib if r["t"] >= 8 else 0),
                                                 "feedback": 5 * mib, "audit": 1000 + int(r["t"])}}
                        for r in raw["resources"]]
    inv = invariants(raw)
    assert inv["disk_growth"]["by_folder_mib"] == {"models": 2.0}, "unchanged and sub-0.05 MiB folders left out"
    assert inv["disk_growth"]["detail"].endswith("; by folder, MiB: models +2"), "shown where the tables show it"
    assert inv["disk_growth"]["pass"], "the check itself still reads disk_bytes"
