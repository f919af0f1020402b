"""The offline embedding router: >= 95% on the held-out labelled goals (off-topic ones must get `clarify`)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from autooptimizer.agents.router import AGENT_LABELS, CLARIFY, get_router, load_eval_set, load_examples


def test_eval_set_is_varied_held_out_and_router_is_accurate():
    items = load_eval_set()
    labels = [i["label"] for i in items]
    assert len(items) >= 40 and labels.count(CLARIFY) >= 5
    assert all(labels.count(a) >= 5 for a in AGENT_LABELS)
    exemplars = {t.lower() for ts in load_examples().values() for t in ts}
    assert not exemplars & {i["goal"].lower() for i in items}  # held out
    res = get_router().evaluate(items)
    assert res.accuracy >= 0.95, res.errors
    assert res.p50_ms < 500


def test_route_cli_json_and_clarify():
    from autooptimizer.cli.app import app

    runner = CliRunner()
    out = runner.invoke(app, ["route", "roll back the canary, users see errors", "--json"])
    data = json.loads(out.stdout)
    assert data["agent"] == "devops" and 0.0 <= data["confidence"] <= 1.0
    off = json.loads(runner.invoke(app, ["route", "what's the weather in Lisbon tomorrow?", "--json"]).stdout)
    assert off["agent"] == CLARIFY
    assert get_router().route("").agent == CLARIFY
