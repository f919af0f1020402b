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

from autooptimizer.agents.testing import demo_registry
from autooptimizer.jsonsafe import MAX_DEPTH, check_json
from autooptimizer.policies.audit import AuditLog
from autooptimizer.tools.registry import ToolCallResult

FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# any character, lone surrogates (category Cs) included
ODD_TEXT = st.text(st.characters(exclude_categories=()), max_size=12)
EDGE_VALUES = [lambda: 10 ** 5000, lambda: -(10 ** 400), lambda: 2 ** 64, lambda: float("nan"), lambda: float("inf"),
               lambda: "\ud800", lambda: "a\udfffb", lambda: "\x00\u202e", lambda: b"bytes", lambda: bytearray(b"x"),
               lambda: {1, 2}, lambda: frozenset({"a"}), lambda: (1, 2), lambda: "x" * 20_000,
               lambda: list(range(1500)), object]  # factories: hypothesis prints strategies, and a huge int can't print
edge = st.sampled_from(range(len(EDGE_VALUES))).map(lambda i: EDGE_VALUES[i]())


def nest(depth: int, kind: str) -> Any:
    """A value nested `depth` levels deep (built iteratively: building it must not be what fails)."""
    value: Any = "leaf"
    for i in range(depth):
        value = [value] if kind == "list" or (kind == "mixed" and i % 2) else {"k": value}
    return value


leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), ODD_TEXT, edge)
keys = st.one_of(ODD_TEXT, ODD_TEXT, st.integers(-5, 5), st.none(), st.booleans(), st.just((1, 2)))
json_like = st.recursive(leaves, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)), max_leaves=20)
deep = st.builds(nest, st.integers(MAX_DEPTH - 2, 3000), st.sampled_from(["list", "dict", "mixed"]))
fields = st.dictionaries(st.sampled_from(["promql", "step", "env", "x", "\ud800"]) | ODD_TEXT,
                         st.one_of(json_like, deep), max_size=4)
arguments = st.one_of(fields, st.builds(lambda f, p: {**f, "promql": p}, fields, st.one_of(ODD_TEXT, json_like)),
                      json_like, deep, st.none())
targets = st.one_of(st.sampled_from([("metrics", "query_metrics"), ("metrics", "check_quality_gates"),
                                     ("metrics", "no_such_tool"), ("ml", "query_metrics")]),
                    st.tuples(ODD_TEXT, ODD_TEXT))


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
