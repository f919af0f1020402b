"""Every framework adapter goes through `REGISTRY.call`: a denied call never runs its function, in LangChain,
AutoGen and CrewAI alike; a permitted one does, once."""

from __future__ import annotations

import asyncio
import json

import pytest
from support.agent_world import demo_registry

from autooptimizer.tools.adapters.autogen import RegistryWorkbench
from autooptimizer.tools.adapters.langchain import langchain_tools

DENIED = {"model_version": "7", "weight": 0.9}  # canary weight above 0.5: deny in every env
PERMITTED = {"model_version": "7", "weight": 0.2}


def _by_name(tools):
    return {t.name: t for t in tools}


def test_langchain_denied_tool_does_not_run():
    reg, world = demo_registry()
    tools = _by_name(langchain_tools("devops", reg))
    assert set(tools) == {s.name for s in reg.for_agent("devops")}
    out = json.loads(tools["deploy_canary"].invoke(DENIED))
    assert out["decision"] == "deny" and out["executed"] is False and world.executed == []
    out = json.loads(tools["deploy_canary"].invoke(PERMITTED))
    assert out["decision"] == "permit" and out["executed"] is True
    assert world.executed == [("deploy_canary", PERMITTED)]


def test_autogen_denied_tool_does_not_run():
    reg, world = demo_registry()
    wb = RegistryWorkbench("devops", reg)
    names = [t["name"] for t in asyncio.run(wb.list_tools())]
    assert sorted(names) == sorted(s.name for s in reg.for_agent("devops"))
    res = asyncio.run(wb.call_tool("deploy_canary", DENIED))
    out = json.loads(res.result[0].content)
    assert res.is_error and out["decision"] == "deny" and not out["executed"] and world.executed == []
    # a tool the agent does not own, and malformed arguments, reach the registry and are denied there
    other = json.loads(asyncio.run(wb.call_tool("train_reranker", {"dataset": "x"})).result[0].content)
    bad = json.loads(asyncio.run(wb.call_tool("deploy_canary", {"weight": "lots"})).result[0].content)
    assert other["decision"] == bad["decision"] == "deny" and world.executed == []
    assert "Invalid arguments" in bad["error"]
    res = asyncio.run(wb.call_tool("deploy_canary", PERMITTED))
    assert not res.is_error and world.executed == [("deploy_canary", PERMITTED)]


def test_crewai_denied_tool_does_not_run():
    from autooptimizer.tools.adapters.crewai import crewai_tools

    reg, world = demo_registry()
    tools = _by_name(crewai_tools("devops", reg))
    assert set(tools) == {s.name for s in reg.for_agent("devops")}
    out = json.loads(tools["deploy_canary"].run(**DENIED))
    assert out["decision"] == "deny" and out["executed"] is False and world.executed == []
    out = json.loads(tools["deploy_canary"].run(**PERMITTED))
    assert out["executed"] is True and world.executed == [("deploy_canary", PERMITTED)]
    assert tools["deploy_canary"].cache_function({}, "x") is False  # CrewAI must not replay a decision


@pytest.mark.parametrize("agent", ["metrics", "data", "ml", "devops"])
def test_kill_switch_stops_change_tools_through_adapters(agent):
    from autooptimizer.policies.killswitch import kill_switch

    reg, world = demo_registry()
    kill_switch.set(True, by="test", reason="adapter test")
    try:
        for spec in reg.for_agent(agent):
            if spec.risk == "read":
                continue
            res = asyncio.run(RegistryWorkbench(agent, reg).call_tool(spec.name, {}))
            assert json.loads(res.result[0].content)["executed"] is False
    finally:
        kill_switch.set(False, by="test")
    assert world.executed == []


def _builders():
    from autooptimizer.tools.adapters.crewai import crewai_tools

    def run_autogen(reg, scope, args):
        wb = RegistryWorkbench("devops", reg, scope=scope)
        return json.loads(asyncio.run(wb.call_tool("deploy_canary", args)).result[0].content)

    return {"langchain": lambda reg, scope, args: json.loads(
                _by_name(langchain_tools("devops", reg, scope=scope))["deploy_canary"].invoke(args)),
            "crewai": lambda reg, scope, args: json.loads(
                _by_name(crewai_tools("devops", reg, scope=scope))["deploy_canary"].run(**args)),
            "autogen": run_autogen}


@pytest.mark.parametrize("framework", ["langchain", "crewai", "autogen"])
def test_every_adapter_carries_the_scope_it_was_built_with(framework):
    """Built with a scope that leaves deploy_canary out, a permitted canary is denied by `shared.intent-scope`;
    the run's own scope (RunContext) bounds it too, and the two intersect."""
    from autooptimizer.tools.adapters.common import RunContext, run_scope

    call = _builders()[framework]
    reg, world = demo_registry()
    out = call(reg, frozenset({"query_metrics"}), PERMITTED)
    assert (out["decision"], out["executed"], world.executed) == ("deny", False, [])
    assert "operator" in out["reason"]
    with run_scope(RunContext(env="dev", scope=frozenset({"query_metrics"}))):
        assert call(reg, None, PERMITTED)["decision"] == "deny"
        assert call(reg, frozenset({"deploy_canary"}), PERMITTED)["decision"] == "deny"  # intersection: empty
    assert call(reg, frozenset({"deploy_canary"}), PERMITTED)["executed"] is True
    assert world.executed == [("deploy_canary", PERMITTED)]
