"""The Grafana dashboard and the recording rules it reads: shipped as generated, structurally sound, and reading only
series that exist (recorded by the shipped rules, or exported by the optimizer)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import yaml

from autooptimizer.gates import gate_queries
from autooptimizer.infra.grafana import DASHBOARD_FILE, RULES_FILE, dashboard, recording_rules
from autooptimizer.profiles import load_profile

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "grafana"
OPTIMIZER_METRICS = {"autoopt_optimizer_kill_switch", "autoopt_optimizer_pending_approvals",
                     "autoopt_optimizer_cycle_running", "autoopt_optimizer_cycles_total"}


def _shipped() -> tuple[dict, dict]:
    return json.loads((DEPLOY / DASHBOARD_FILE).read_text()), yaml.safe_load((DEPLOY / RULES_FILE).read_text())


def test_the_shipped_files_are_what_the_code_generates() -> None:
    board, rules = _shipped()
    prod = load_profile("prod")
    assert board == dashboard(prod), "regenerate: python -m autooptimizer.infra.grafana"
    assert rules == recording_rules(prod)


def test_dashboard_structure() -> None:
    board, _ = _shipped()
    assert board["uid"] and board["title"] and isinstance(board["schemaVersion"], int)
    ds_vars = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
    assert [(v["name"], v["query"]) for v in ds_vars] == [("DS_PROMETHEUS", "prometheus")]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in board["panels"]:
        g = p["gridPos"]
        assert p["type"] in {"timeseries", "stat"} and p["title"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["w"] > 0 and g["h"] > 0, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"panel {p['title']} overlaps another"
        cells |= mine
        assert p["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
        assert p["targets"] and [t["refId"] for t in p["targets"]] == ["A", "B", "C"][: len(p["targets"])]
        steps = p["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert steps[0]["value"] is None and all(isinstance(s["value"], int | float) for s in steps[1:])


def test_every_series_the_dashboard_reads_exists() -> None:
    board, rules = _shipped()
    recorded = {r["record"] for g in rules["groups"] for r in g["rules"]}
    for p in board["panels"]:
        for t in p["targets"]:
            names = set(re.findall(r"autoopt[a-z_]*:[a-z0-9_:]+|autoopt_[a-z0-9_]+", t["expr"]))
            assert names and names <= recorded | OPTIMIZER_METRICS, (p["title"], names - recorded)
    # the gates' red lines are the profile's thresholds
    gates = {q.record: q.threshold for q in gate_queries(load_profile("prod"))}
    for p in board["panels"]:
        if p["targets"][0]["expr"] in gates:
            assert p["fieldConfig"]["defaults"]["thresholds"]["steps"][1]["value"] == gates[p["targets"][0]["expr"]]
    assert len([p for p in board["panels"] if p["targets"][0]["expr"] in gates]) == 4


def test_the_rules_file_is_valid_for_prometheus() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool ships with Debian's prometheus package (apt-get install prometheus)"
    out = subprocess.run([promtool, "check", "rules", str(DEPLOY / RULES_FILE)], capture_output=True, text=True)
    assert out.returncode == 0 and "SUCCESS: 7 rules found" in out.stdout, out.stdout + out.stderr
