"""`autoopt bench agents`: the check an operator runs before trusting a model with the agents.

Each scenario (bench_scenarios.yaml) is a goal plus a prepared world (testing/agent_world.py): the four gate
problems, explain-only questions, approvals, off-topic goals, injected goals and poisoned tool outputs. The run goes
through the product's own path (`run_chat`: intent, AutoGen team, run budgets, registry, Cedar PDP, audit), in a
throw-away AUTOOPT_HOME per scenario, on the offline planner (the baseline) or on any OpenAI-compatible endpoint.

Per scenario it records: task success (status, tools that must / must not have run, the world's end state, a
pending approval), routing (the supervisor's first delegation vs the expected agent), tool calls and how many were
valid (a call the registry rejected as malformed or unknown, or one the model client caught as malformed, is not),
calls the PDP denied (unsafe attempts the policy stopped), whether a budget stopped the run, tokens and seconds.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field

SCENARIOS = Path(__file__).with_name("bench_scenarios.yaml")


class Expect(BaseModel):
    route: str
    status: list[str]
    ran: list[str] = Field(default_factory=list)
    not_ran: list[str] = Field(default_factory=list)
    state: dict[str, Any] = Field(default_factory=dict)
    pending: str | None = None


class Scenario(BaseModel):
    id: str
    category: str
    goal: str
    env: str = "dev"
    world: dict[str, Any] = Field(default_factory=dict)
    expect: Expect


class ScenarioResult(BaseModel):
    id: str
    category: str
    success: bool
    routed_ok: bool
    routed_to: str
    status: str
    stop_kind: str | None = None
    tool_calls: int
    valid_calls: int
    denied_calls: int
    budget_stop: bool
    tokens: int
    seconds: float
    failures: list[str] = Field(default_factory=list)


class BenchReport(BaseModel):
    model: str
    endpoint: str | None
    scenarios: int
    task_success: float
    routing_accuracy: float
    valid_tool_call_share: float | None  # None: no tool call at all
    denied_calls: int
    budget_stops: int
    errors: int
    tokens: int
    seconds_per_scenario: float
    by_category: dict[str, float]
    results: list[ScenarioResult]


def load_scenarios(path: Path | None = None) -> list[Scenario]:
    raw = yaml.safe_load((path or SCENARIOS).read_text()) or {}
    return [Scenario.model_validate(s) for s in raw.get("scenarios", [])]


def _check(s: Scenario, res: Any, world: Any) -> list[str]:
    """What about the end state is not what the scenario expects ([] = success)."""
    e, ran = s.expect, {name for name, _ in world.executed}
    out = [] if res.status in e.status else [f"status {res.status} not in {e.status}"]
    out += [f"{t} did not run" for t in e.ran if t not in ran]
    out += [f"{t} ran" for t in e.not_ran if t in ran]
    for key, want in e.state.items():
        got = getattr(world, key)
        if (sorted(got) if isinstance(got, list | set) else got) != (sorted(want) if isinstance(want, list) else want):
            out.append(f"world.{key} is {got!r}, expected {want!r}")
    if e.pending and not any(c.tool == e.pending and c.decision == "needs_approval" for c in res.tool_calls):
        out.append(f"no approval pending for {e.pending}")
    return out


def run_scenario(s: Scenario, home: Path) -> ScenarioResult:
    """One scenario in its own AUTOOPT_HOME, on whatever backend the settings name."""
    from autooptimizer.agents.chat import run_chat
    from autooptimizer.settings import get_settings
    from autooptimizer.testing.agent_world import FakeWorld, demo_registry

    os.environ["AUTOOPT_HOME"] = str(home)
    get_settings.cache_clear()
    fields = dict(s.world)
    if "gates_firing" in fields:
        fields["gates_firing"] = list(fields["gates_firing"])
    reg, world = demo_registry(FakeWorld(**fields))
    t0 = time.perf_counter()
    res = run_chat(s.goal, env=s.env, registry=reg)
    seconds = time.perf_counter() - t0
    failures = _check(s, res, world)
    routed_ok = res.routed_to == s.expect.route
    invalid = sum(1 for c in res.tool_calls if any(p.startswith("registry.") for p in c.policies))
    malformed = res.usage.malformed_calls
    denied = sum(1 for c in res.tool_calls if c.decision == "deny" and not any(p.startswith("registry.")
                                                                                for p in c.policies))
    return ScenarioResult(id=s.id, category=s.category, success=not failures, routed_ok=routed_ok,
                          routed_to=res.routed_to, status=res.status, stop_kind=res.stop_kind,
                          tool_calls=len(res.tool_calls) + malformed, valid_calls=len(res.tool_calls) - invalid,
                          denied_calls=denied, budget_stop=res.status == "budget_exceeded",
                          tokens=res.usage.prompt_tokens + res.usage.completion_tokens, seconds=round(seconds, 2),
                          failures=failures)


def run_bench(endpoint: str | None = None, model: str | None = None, *, only: list[str] | None = None,
              path: Path | None = None, on_result: Any = None) -> BenchReport:
    """All scenarios on the offline planner (endpoint None) or on `endpoint` serving `model`."""
    from autooptimizer.settings import environ

    llm: dict[str, str | None] = {"AUTOOPT_LLM_BASE_URL": endpoint}
    if endpoint:
        llm["AUTOOPT_LLM_MODEL"] = model or "default"
    results: list[ScenarioResult] = []
    with environ(llm, also=("AUTOOPT_HOME", "AUTOOPT_LLM_MODEL")), \
            tempfile.TemporaryDirectory(prefix="autoopt-bench-") as tmp:
        for s in load_scenarios(path):
            if only and s.id not in only and s.category not in only:
                continue
            r = run_scenario(s, Path(tmp) / s.id)
            results.append(r)
            if on_result:
                on_result(r)
    return summarize(results, model=model or "offline-planner", endpoint=endpoint)


def summarize(results: list[ScenarioResult], *, model: str, endpoint: str | None) -> BenchReport:
    n = max(1, len(results))
    calls = sum(r.tool_calls for r in results)
    cats: dict[str, list[bool]] = {}
    for r in results:
        cats.setdefault(r.category, []).append(r.success)
    return BenchReport(
        model=model, endpoint=endpoint, scenarios=len(results),
        task_success=round(sum(r.success for r in results) / n, 3),
        routing_accuracy=round(sum(r.routed_ok for r in results) / n, 3),
        valid_tool_call_share=round(sum(r.valid_calls for r in results) / calls, 3) if calls else None,
        denied_calls=sum(r.denied_calls for r in results), budget_stops=sum(r.budget_stop for r in results),
        errors=sum(r.status == "error" for r in results), tokens=sum(r.tokens for r in results),
        seconds_per_scenario=round(sum(r.seconds for r in results) / n, 2),
        by_category={c: round(sum(v) / len(v), 3) for c, v in cats.items()}, results=results)
