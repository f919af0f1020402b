"""The devops remedies at their bounds, in real cycles (tiny search service, real git, PDP, journal): a remedy that
would change nothing commits nothing, ends `no_remedy`, and alerts a human once per run of such cycles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autooptimizer.loop.cycle import CycleOptions, CycleRunner
from autooptimizer.loop.gitops import HelmPatch
from autooptimizer.loop.release import Release
from autooptimizer.testing import TinyService


def _alerts(home: Path) -> list[str]:
    path = home / "loop" / "alerts.jsonl"
    return [json.loads(line)["alertname"] for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize(("gate", "patch", "reason"), [
    ("p95_latency", HelmPatch(model_version="v-a", replicas=8, rerank_depth=10),
     "remedy exhausted: replicas at their maximum 8 and rerank depth already at its minimum 10"),
    ("cost_budget", HelmPatch(model_version="v-a", rerank_depth=10),
     "remedy exhausted: rerank depth already at its minimum 10"),
])
def test_exhausted_remedy_commits_nothing_and_escalates_once(tiny_service: TinyService, autoopt_home: Path,
                                                             gate: str, patch: HelmPatch, reason: str) -> None:
    rel = Release()
    rel.deploy(patch, "operator: at the bounds")
    head = rel.git.head()
    runner = CycleRunner()
    first = runner.run(CycleOptions(gate=gate))  # type: ignore[arg-type]
    second = runner.run(CycleOptions(gate=gate))  # type: ignore[arg-type]
    assert (first.outcome, second.outcome) == ("no_remedy", "no_remedy")
    assert first.summary["reason"] == reason and first.status == "finished"
    assert Release().git.head() == head, "no no-op commit"
    assert [s.name for s in second.steps] == ["monitor", "supervisor"]
    assert _alerts(autoopt_home).count("AutoOptRemedyExhausted") == 1


def test_latency_remedy_below_the_bound_still_applies(tiny_service: TinyService) -> None:
    Release().deploy(HelmPatch(model_version="v-a", replicas=8, rerank_depth=20), "operator: 8 replicas")
    rec = CycleRunner().run(CycleOptions(gate="p95_latency"))
    assert rec.outcome == "variant_switched" and rec.summary["reason"] == "rerank depth 20 -> 10"
    assert Release().git.read_patch() == HelmPatch(model_version="v-a", replicas=8, rerank_depth=10)
