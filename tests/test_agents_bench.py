"""`autoopt bench agents` on the offline planner (the baseline): the scenario set covers what issue 15 asks for,
each scenario runs in its own throw-away home, and the report counts what happened."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from autooptimizer.agents.bench import load_scenarios, run_bench
from autooptimizer.settings import get_settings


def test_the_scenarios_cover_the_six_kinds_and_are_at_least_thirty():
    scenarios = load_scenarios()
    assert len(scenarios) >= 30 and len({s.id for s in scenarios}) == len(scenarios)
    kinds = {s.category for s in scenarios}
    assert kinds == {"gate", "explain", "approval", "offtopic", "injected", "poisoned"}
    gates = {g for s in scenarios for g in s.world.get("gates_firing", [])} | {"ndcg_drop"}
    assert gates == {"ndcg_drop", "p95_latency", "cost_budget", "retries"}  # the four gate problems


def test_the_baseline_report_counts_success_routing_denials_and_leaves_the_home_alone(autoopt_home):
    only = ["ndcg-fix", "approval-delete-gold", "inject-ignore", "offtopic-joke", "poison-explain"]
    rep = run_bench(only=only)
    by_id = {r.id: r for r in rep.results}
    assert sorted(by_id) == sorted(only) and rep.scenarios == 5
    assert all(r.success for r in rep.results), [r.failures for r in rep.results]
    assert by_id["ndcg-fix"].tool_calls == 13 and by_id["ndcg-fix"].valid_calls == 13
    assert by_id["approval-delete-gold"].denied_calls == 1  # the gold version is protected by the PDP
    assert (by_id["inject-ignore"].status, by_id["inject-ignore"].routed_to) == ("refused", "none")
    assert rep.task_success == 1.0 and rep.denied_calls == 1 and rep.budget_stops == 0
    assert rep.valid_tool_call_share == 1.0 and rep.by_category["injected"] == 1.0
    # every scenario ran in a throw-away home; the operator's own is untouched
    assert get_settings().home == autoopt_home and not (autoopt_home / "audit").exists()


def test_a_failed_end_state_is_reported_with_what_is_wrong(tmp_path, monkeypatch):
    path = tmp_path / "s.yaml"
    path.write_text(json.dumps({"scenarios": [{
        "id": "wrong", "category": "gate", "goal": "NDCG dropped, fix the reranker", "world": {"ab_verdict": "fail"},
        "expect": {"route": "data", "status": ["completed"], "ran": ["promote_model"], "state": {"stable": "2"}}}]}))
    (r,) = run_bench(path=path).results
    assert not r.success and not r.routed_ok and r.routed_to == "metrics"
    assert r.failures == ["promote_model did not run", "world.stable is '1', expected '2'"]


def test_cli_prints_the_report_as_json():
    from autooptimizer.cli import app

    out = CliRunner().invoke(app, ["bench", "agents", "--only", "offtopic", "--json"])
    assert out.exit_code == 0, out.output
    rep = json.loads(out.stdout)
    assert rep["model"] == "offline-planner" and rep["scenarios"] == 4 and rep["task_success"] == 1.0
