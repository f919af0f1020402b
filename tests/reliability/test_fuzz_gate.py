"""Fuzzing the gate: whatever the arguments (random JSON, deep nesting, huge ints, NaN, lone surrogates, odd keys,
bytes, sets), `ToolRegistry.call` and the three framework adapters return normally, and every call leaves exactly
one `decision` record (plus one `result` record iff the tool ran) in an audit log that still verifies.

Targets are the test-double registry's read tools and an unknown tool, so nothing heavy runs.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.agent_world import demo_registry

from autooptimizer.jsonsafe import check_json
from autooptimizer.policies.audit import AuditLog
from autooptimizer.reliability.gate_fuzz import run_gate_fuzz, strategies
from autooptimizer.tools.registry import ToolCallResult

FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

_ST = strategies()
ODD_TEXT, json_like, deep = _ST["odd_text"], _ST["json_like"], _ST["deep"]
arguments, targets = _ST["arguments"], _ST["targets"]


def _audit_kinds(log: AuditLog, since: int) -> list[str]:
    return [rec["kind"] for rec in list(log.records())[since:]]


def _count(log: AuditLog) -> int:
    return sum(1 for _ in log.records())


@pytest.fixture(scope="module")
def fake():
    return demo_registry()


def _assert_one_decision(log: AuditLog, before: int, executed: bool) -> dict:
    kinds = _audit_kinds(log, before)
    assert kinds.count("decision") == 1 and kinds.count("result") == (1 if executed else 0), kinds
    rep = log.verify()
    assert rep.ok, rep.problem
    return next(rec for rec in list(log.records())[before:] if rec["kind"] == "decision")


@FUZZ
@given(target=targets, args=arguments)
def test_registry_call_never_raises_and_audits_each_call_once(fake, target: tuple[str, str], args: Any) -> None:
    reg, _world = fake
    log = AuditLog()
    before = _count(log)
    res = reg.call(target[0], target[1], args, env="dev")
    assert isinstance(res, ToolCallResult)
    rec = _assert_one_decision(log, before, res.executed)
    assert (rec["decision"], rec["policies"]) == (res.decision, res.policies)
    json.loads(res.model_dump_json())  # what the caller got back is JSON-safe too
    if check_json(args if args is not None else {}) is not None:  # refused by shape: nothing ran, and it says why
        assert (res.decision, res.executed) == ("deny", False)
        assert res.policies[0] in ("registry.args-too-deep", "registry.args-too-large", "registry.invalid-args")
        assert "nothing ran" in res.error.lower()


@FUZZ
@given(target=targets, args=arguments)
def test_autogen_workbench_never_raises(fake, target: tuple[str, str], args: Any) -> None:
    from autooptimizer.tools.adapters.autogen import RegistryWorkbench

    reg, _world = fake
    log = AuditLog()
    before = _count(log)
    out = asyncio.run(RegistryWorkbench(target[0], reg).call_tool(target[1], args))
    outcome = json.loads(out.result[0].content)
    rec = _assert_one_decision(log, before, outcome["executed"])
    assert rec["decision"] == outcome["decision"]
    assert out.is_error == (not outcome["executed"] or outcome["error"] is not None)


@FUZZ
@given(args=arguments)
def test_langchain_tool_never_raises(fake, args: Any) -> None:
    from autooptimizer.tools.adapters.langchain import langchain_tools

    reg, _world = fake
    tool = {t.name: t for t in langchain_tools("metrics", reg)}["query_metrics"]
    log = AuditLog()
    before = _count(log)
    outcome = json.loads(tool.invoke(args if args is not None else {}))
    rec = _assert_one_decision(log, before, outcome["executed"])
    assert rec["decision"] == outcome["decision"]


@FUZZ
@given(kwargs=st.dictionaries(st.sampled_from(["promql", "step", "x"]) | ODD_TEXT, st.one_of(json_like, deep),
                              max_size=4))
def test_crewai_tool_never_raises(fake, kwargs: dict) -> None:
    from autooptimizer.tools.adapters.crewai import crewai_tools

    reg, _world = fake
    tool = {t.name: t for t in crewai_tools("metrics", reg)}["query_metrics"]
    log = AuditLog()
    before = _count(log)
    outcome = json.loads(tool.run(**kwargs))
    rec = _assert_one_decision(log, before, outcome["executed"])
    assert rec["decision"] == outcome["decision"]


def test_the_bench_fuzz_counts_nothing_unhandled_and_nothing_unaudited() -> None:
    """`autoopt bench faults` runs the same strategies against the real registry and the LangChain adapter."""
    res = run_gate_fuzz(max_examples=60)
    assert res.calls == 120 and res.denied > 0
    assert (res.unhandled_exceptions, res.calls_without_audit_record, res.audit_ok) == (0, 0, True)
