""""No input can make the gate raise": the inputs from the reliability issue, and variants of each, through the
registry, the three framework adapters, trace redaction and `autoopt chat`. Each call ends in exactly one
decision, one `decision` audit record with the right policy id, and nothing runs."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from pydantic import BaseModel
from support.agent_world import demo_registry

from autooptimizer.jsonsafe import MAX_DEPTH, MAX_ITEMS, MAX_STR
from autooptimizer.policies.audit import AuditLog
from autooptimizer.tools.registry import MAX_ARGS_BYTES, ToolRegistry, tool

TOO_DEEP, TOO_LARGE, INVALID = "registry.args-too-deep", "registry.args-too-large", "registry.invalid-args"


def nest(depth: int, kind: str = "list", leaf: Any = 1) -> Any:
    value = leaf
    for i in range(depth):
        value = [value] if kind == "list" or (kind == "mixed" and i % 2) else {"k": value}
    return value


def decisions() -> list[dict]:
    return [r for r in AuditLog().records() if r["kind"] == "decision"]


@pytest.fixture
def fake():
    return demo_registry()


def _denied(res: Any, policy: str, world: Any, *words: str) -> None:
    assert (res.decision, res.executed, res.policies) == ("deny", False, [policy])
    assert "Nothing ran" in res.error and all(w in res.error for w in words), res.error
    assert world.executed == []
    recs = decisions()
    assert len(recs) == 1 and recs[0]["policies"] == [policy] and recs[0]["decision"] == "deny"
    assert AuditLog().verify().ok


@pytest.mark.parametrize("args", [
    {"promql": "up", "x": nest(1000)},  # the issue: ~1,000 levels, about 6 kB
    {"promql": "up", "x": nest(1000, "dict")},
    nest(5000, "mixed"),
    {"promql": "up", "x": nest(MAX_DEPTH)},  # one level over: the args object is level 1
])
def test_deep_arguments_are_denied_before_anything_recurses(fake, args: dict) -> None:
    reg, world = fake
    assert len('{"k": ' * 1000 + "1" + "}" * 1000) < MAX_ARGS_BYTES  # not a size problem: the depth is refused
    res = reg.call("metrics", "query_metrics", args, env="dev")
    _denied(res, TOO_DEEP, world, f"nested deeper than {MAX_DEPTH} levels")
    assert len(json.dumps(decisions()[0]["args"])) < 4000  # the audit keeps a bounded summary, not the payload


def test_the_depth_limit_is_exact(fake) -> None:
    reg, world = fake
    res = reg.call("metrics", "query_metrics", {"promql": "up", "x": nest(MAX_DEPTH - 1)}, env="dev")
    assert (res.decision, res.executed) == ("permit", True)


@pytest.mark.parametrize("args, policy, words", [
    ({"promql": 10 ** 5000}, INVALID, ["5001 digits"]),  # the issue: int->str refuses it
    ({"promql": "up", "x": -(10 ** 4301)}, INVALID, ["digits"]),
    ({"promql": "up", "x": 2 ** 64}, INVALID, ["64 bits"]),
    ({"promql": "up", "x": float("nan")}, INVALID, ["nan"]),
    ({"promql": "up", "x": [float("inf")]}, INVALID, ["inf", "args.x[0]"]),
    ({"promql": "up", "x": {"y": -float("inf")}}, INVALID, ["-inf", "args.x.y"]),
    ({"promql": "\ud800"}, INVALID, ["lone surrogate", "args.promql"]),
    ({"promql": "up", "\udfff": 1}, INVALID, ["key", "lone surrogate"]),
    ({"promql": "up", 1: "a"}, INVALID, ["key of type int"]),
    ({"promql": "up", None: "a"}, INVALID, ["key of type NoneType"]),
    ({"promql": "up", (1, 2): "a"}, INVALID, ["key of type tuple"]),
    ({"promql": b"up"}, INVALID, ["type bytes"]),
    ({"promql": "up", "x": {1, 2}}, INVALID, ["type set"]),
    ({"promql": "up", "x": frozenset()}, INVALID, ["type frozenset"]),
    ({"promql": "up", "x": object()}, INVALID, ["type object"]),
    ({"promql": "up", "x": list(range(MAX_ITEMS + 1))}, TOO_LARGE, [f"{MAX_ITEMS + 1} items"]),
    ({"promql": "up", "x": "y" * (MAX_STR + 1)}, TOO_LARGE, [f"{MAX_STR + 1} characters"]),
])
def test_values_json_cannot_hold_are_denied_with_the_place_named(fake, args: dict, policy: str,
                                                                 words: list[str]) -> None:
    reg, world = fake
    _denied(reg.call("metrics", "query_metrics", args, env="dev"), policy, world, *words)


@pytest.mark.parametrize("promql", ["up\u202e{job}", "\x00", "\U0001f600 \u0301 \ufeff", "ﬀ\u2028"])
def test_odd_but_valid_unicode_runs_and_is_recorded_exactly(fake, promql: str) -> None:
    reg, world = fake
    res = reg.call("metrics", "query_metrics", {"promql": promql}, env="dev")
    assert (res.decision, res.executed) == ("permit", True) and world.executed == [("query_metrics",
                                                                                    {"promql": promql})]
    assert decisions()[0]["args"] == {"promql": promql} and AuditLog().verify().ok


def test_the_limits_themselves_are_accepted(fake) -> None:
    reg, _world = fake
    args = {"promql": "up", "x": list(range(MAX_ITEMS)), "y": "z" * MAX_STR, "n": 2 ** 64 - 1, "u": "\U0010ffff"}
    assert reg.call("metrics", "query_metrics", args, env="dev").executed


@pytest.mark.parametrize("name, agent", [("\ud800tool", "metrics"), ("query_metrics", "\udfff"),
                                         ("x" * 5000, "metrics")])
def test_odd_tool_and_agent_names_are_denied_and_audited(fake, name: str, agent: str) -> None:
    reg, world = fake
    res = reg.call(agent, name, {"promql": "up"}, env="dev")
    assert (res.decision, res.executed) == ("deny", False) and world.executed == []
    assert len(decisions()) == 1 and AuditLog().verify().ok
    json.loads(res.model_dump_json())


def test_an_unexpected_failure_inside_the_gate_is_a_recorded_deny(fake, monkeypatch: pytest.MonkeyPatch) -> None:
    from autooptimizer.policies.pdp import PDP

    def broken(self: Any, agent: str, tool: str, context: Any = None) -> Any:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(PDP, "decide", broken)
    reg, world = fake
    res = reg.call("metrics", "query_metrics", {"promql": "up"}, env="dev")
    assert (res.decision, res.executed, res.policies) == ("deny", False, ["registry.internal-error"])
    assert "RecursionError" in res.error and world.executed == []
    assert [r["policies"] for r in decisions()] == [["registry.internal-error"]] and AuditLog().verify().ok


class AnyArgs(BaseModel):
    n: int = 1


def test_a_tool_result_json_cannot_hold_is_summarised_not_raised() -> None:
    reg = ToolRegistry()

    @tool(name="query_metrics", owner="metrics", risk="read", registry=reg)
    def hostile(args: AnyArgs, ctx: object) -> dict:
        """Returns what no JSON encoder takes as it is."""
        return {"deep": nest(3000), "big": 10 ** 5000, "text": "a\ud800", "nan": float("nan"), "b": b"x"}

    res = reg.call("metrics", "query_metrics", {}, env="dev")
    assert (res.decision, res.executed, res.error) == ("permit", True, None)
    recs = list(AuditLog().records())
    assert [r["kind"] for r in recs] == ["decision", "result"] and AuditLog().verify().ok
    summary = recs[1]["result"]
    assert "nested deeper than" in json.dumps(summary["deep"]) and summary["text"] == "a\\ud800"
    assert "digits" in summary["big"] and (summary["nan"], summary["b"]) == ("nan", "<1 bytes>")
    from autooptimizer.tools.adapters.common import call_tool, outcome_text

    text = outcome_text(call_tool("metrics", "query_metrics", {}, reg))
    shown = json.loads(text)["result"]
    assert shown["text"] == "a\\ud800" and "digits" in shown["big"] and shown["nan"] == "nan"


# --- the adapters -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("depth, kind", [(950, "list"), (1000, "dict"), (4000, "mixed")])
def test_autogen_workbench_denies_deep_arguments(fake, depth: int, kind: str) -> None:
    """The issue: through AutoGen 950 levels were enough, because trace redaction recursed first."""
    from autooptimizer.tools.adapters.autogen import RegistryWorkbench
    from autooptimizer.tracing import start_trace, trace_store

    reg, world = fake
    with start_trace("chat", {"goal": "deep"}) as trace:
        out = asyncio.run(RegistryWorkbench("metrics", reg).call_tool("query_metrics",
                                                                      {"promql": "up", "x": nest(depth, kind)}))
    outcome = json.loads(out.result[0].content)
    assert out.is_error and (outcome["decision"], outcome["executed"]) == ("deny", False)
    assert f"nested deeper than {MAX_DEPTH} levels" in outcome["error"]
    _denied_record(world)
    spans = {s.name: s for s in trace_store().spans(trace.trace_id)}
    assert "nested deeper than" in json.dumps(spans["tool:query_metrics"].inputs)  # redacted, bounded, stored


def _denied_record(world: Any, policy: str = TOO_DEEP) -> None:
    assert world.executed == [] and [r["policies"] for r in decisions()] == [[policy]] and AuditLog().verify().ok


def test_autogen_workbench_passes_non_object_arguments_to_the_registry(fake) -> None:
    from autooptimizer.tools.adapters.autogen import RegistryWorkbench

    reg, world = fake
    out = asyncio.run(RegistryWorkbench("metrics", reg).call_tool("query_metrics", "up"))  # type: ignore[arg-type]
    assert "must be an object" in json.loads(out.result[0].content)["error"]
    _denied_record(world, INVALID)


@pytest.mark.parametrize("value", [nest(1000), 10 ** 5000, "\ud800"], ids=["deep", "huge-int", "surrogate"])
def test_langchain_tool_denies_hostile_arguments(fake, value: Any) -> None:
    from langchain_core.messages import ToolMessage

    from autooptimizer.tools.adapters.langchain import langchain_tools

    reg, world = fake
    lc = {t.name: t for t in langchain_tools("metrics", reg)}["query_metrics"]
    out = json.loads(lc.invoke({"promql": "up", "x": value}))
    assert (out["decision"], out["executed"]) == ("deny", False)
    msg = lc.invoke({"name": "query_metrics", "args": {"promql": value}, "id": "call-1", "type": "tool_call"})
    assert isinstance(msg, ToolMessage) and msg.tool_call_id == "call-1"
    assert json.loads(msg.content)["decision"] == "deny"
    assert world.executed == [] and len(decisions()) == 2 and AuditLog().verify().ok


def test_langchain_and_crewai_send_malformed_calls_to_the_registry(fake) -> None:
    """Formerly LangChain and CrewAI refused these themselves, with no decision and no audit record."""
    from autooptimizer.tools.adapters.crewai import crewai_tools
    from autooptimizer.tools.adapters.langchain import langchain_tools

    reg, world = fake
    lc = {t.name: t for t in langchain_tools("metrics", reg)}["query_metrics"]
    crew = {t.name: t for t in crewai_tools("metrics", reg)}["query_metrics"]
    assert "promql: Field required" in json.loads(lc.invoke({}))["error"]
    assert "promql: Input should be a valid string" in json.loads(crew.run(promql=[1]))["error"]
    assert json.loads(crew.run(promql="up", x=nest(1000)))["decision"] == "deny"
    assert [r["policies"] for r in decisions()] == [[INVALID], [INVALID], [TOO_DEEP]] and world.executed == []
    assert json.loads(lc.invoke({"promql": "up"}))["executed"] is True  # a good call still runs


# --- traces -------------------------------------------------------------------------------------------------------
def test_redaction_is_bounded_and_still_masks_secrets() -> None:
    from autooptimizer.tracing.redact import MASK, redact

    deep = nest(5000, "dict", leaf={"api_key": "sk-abcdefghijklmnop"})
    out = redact({"token": "t0ps3cret", "deep": deep, "n": 10 ** 5000, "s": "Bearer abcdefghijk\ud800"})
    assert out["token"] == MASK and "digits" in out["n"] and out["s"] == f"{MASK}\\ud800"
    assert "nested deeper than" in json.dumps(out)
    shallow = redact({"a": [{"password": "hunter22", "x": 0, "secret": ""}]})
    assert shallow == {"a": [{"password": MASK, "x": 0, "secret": ""}]}


# --- autoopt chat -------------------------------------------------------------------------------------------------
def _replay_client(arguments: str) -> Any:
    from autogen_core import FunctionCall
    from autogen_core.models import CreateResult, RequestUsage
    from autogen_ext.models.replay import ReplayChatCompletionClient

    usage = RequestUsage(prompt_tokens=0, completion_tokens=0)

    def call(name: str, args: str) -> CreateResult:
        return CreateResult(finish_reason="function_calls", usage=usage, cached=False,
                            content=[FunctionCall(id=f"call-{name}", name=name, arguments=args)])

    return ReplayChatCompletionClient(
        [call("transfer_to_metrics", json.dumps({"message": "read the metric"})), call("query_metrics", arguments),
         "The metric could not be read."],
        model_info={"vision": False, "function_calling": True, "json_output": False, "family": "unknown",
                    "structured_output": False})


@pytest.mark.parametrize("arguments", [
    '{"promql": "up", "x": ' + "[" * 1000 + "1" + "]" * 1000 + "}",  # what AutoGen's json.loads cannot parse
    '{"promql": "up", "x": ' + '{"a": ' * 3000 + "1" + "}" * 3000 + "}",
    '{"promql": "[[[{{\\"", "x": ' + "[" * 40 + "]" * 40 + "}",  # brackets in strings do not count
])
def test_chat_answers_when_the_model_sends_deep_arguments(fake, arguments: str) -> None:
    from autooptimizer.agents.chat import run_chat

    reg, world = fake
    res = run_chat("read the metric", registry=reg, model_client=_replay_client(arguments))
    assert res.status == "completed" and res.answer == "The metric could not be read."
    assert [(c.tool, c.decision, c.executed) for c in res.tool_calls] == [("query_metrics", "deny", False)]
    assert "nested deeper than" in res.tool_calls[0].error
    _denied_record(world)
