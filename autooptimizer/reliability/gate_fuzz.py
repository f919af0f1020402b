"""Fuzzing the gate: random tool calls through `ToolRegistry.call` and an adapter, counting what must be zero.

The strategies (hypothesis) cover random JSON, nesting from just under the depth limit to 3,000 levels, huge ints,
NaN and infinities, lone surrogates and odd Unicode in keys and values, non-string keys, bytes, sets, tuples and
arbitrary objects, aimed at read tools, an unknown tool and random tool/agent names. A call "without an audit
record" is one after which the audit log did not gain exactly one `decision` record (plus one `result` iff the tool
ran); an "unhandled exception" is anything `call` or the adapter raised. The tests in tests/reliability/ use the same
strategies with assertions per example.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, cast

from pydantic import BaseModel


def strategies() -> dict[str, Any]:
    """The hypothesis strategies, built on demand (hypothesis is imported lazily)."""
    from hypothesis import strategies as st

    from autooptimizer.jsonsafe import MAX_DEPTH

    odd_text = st.text(st.characters(exclude_categories=()), max_size=12)  # lone surrogates (Cs) included
    edge_values = [lambda: 10 ** 5000, lambda: -(10 ** 400), lambda: 2 ** 64, lambda: float("nan"),
                   lambda: float("inf"), lambda: "\ud800", lambda: "a\udfffb", lambda: "\x00\u202e", lambda: b"bytes",
                   lambda: bytearray(b"x"), lambda: {1, 2}, lambda: frozenset({"a"}), lambda: (1, 2),
                   lambda: "x" * 20_000, lambda: list(range(1500)), object]  # factories: a huge int cannot print
    edge = st.sampled_from(range(len(edge_values))).map(lambda i: edge_values[i]())
    leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), odd_text, edge)
    keys = st.one_of(odd_text, odd_text, st.integers(-5, 5), st.none(), st.booleans(), st.just((1, 2)))
    json_like = st.recursive(leaves, lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)), max_leaves=20)
    deep = st.builds(nest, st.integers(MAX_DEPTH - 2, 3000), st.sampled_from(["list", "dict", "mixed"]))
    fields = st.dictionaries(st.sampled_from(["promql", "step", "env", "x", "\ud800"]) | odd_text,
                             st.one_of(json_like, deep), max_size=4)
    arguments = st.one_of(fields, st.builds(lambda f, p: {**f, "promql": p}, fields, st.one_of(odd_text, json_like)),
                          json_like, deep, st.none())
    targets = st.one_of(st.sampled_from([("metrics", "query_metrics"), ("metrics", "check_quality_gates"),
                                         ("metrics", "no_such_tool"), ("ml", "query_metrics")]),
                        st.tuples(odd_text, odd_text))
    return {"odd_text": odd_text, "json_like": json_like, "deep": deep, "arguments": arguments, "targets": targets}


def nest(depth: int, kind: str) -> Any:
    """A value nested `depth` levels deep (built iteratively: building it must not be what fails)."""
    value: Any = "leaf"
    for i in range(depth):
        value = [value] if kind == "list" or (kind == "mixed" and i % 2) else {"k": value}
    return value


class GateFuzzResult(BaseModel):
    calls: int = 0
    unhandled_exceptions: int = 0
    calls_without_audit_record: int = 0
    audit_ok: bool = False
    denied: int = 0

    @property
    def ok(self) -> bool:
        return self.calls > 0 and not self.unhandled_exceptions and not self.calls_without_audit_record \
            and self.audit_ok


def run_gate_fuzz(max_examples: int = 200, seed: int = 0) -> GateFuzzResult:
    """Fuzz the real registry (every tool loaded, Prometheus absent) and its LangChain adapter in a scratch home."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hseed

    from autooptimizer.policies.audit import AuditLog
    from autooptimizer.reliability.crash import scratch_env
    from autooptimizer.tools import load_all_tools
    from autooptimizer.tools.adapters.langchain import langchain_tools

    out = GateFuzzResult()
    st = strategies()
    with tempfile.TemporaryDirectory(prefix="autoopt-fuzz-") as tmp, scratch_env(Path(tmp)):
        reg = load_all_tools()
        lc_tool = {t.name: t for t in langchain_tools("metrics", reg)}["query_metrics"]
        log = AuditLog()

        def once(fn: Any) -> None:
            before = sum(1 for _ in log.records())
            out.calls += 1
            try:
                executed, decision = fn()
            except Exception:  # noqa: BLE001 - the count is the finding
                out.unhandled_exceptions += 1
                return
            kinds = [r["kind"] for r in list(log.records())[before:]]
            out.denied += decision == "deny"
            if kinds.count("decision") != 1 or kinds.count("result") != (1 if executed else 0):
                out.calls_without_audit_record += 1

        # the cast: HealthCheck's metaclass __iter__ (it skips deprecated checks) has no annotation
        @settings(max_examples=max_examples, deadline=None, database=None,
                  suppress_health_check=cast("list[HealthCheck]", list(HealthCheck)))
        @hseed(seed)
        @given(target=st["targets"], args=st["arguments"])
        def fuzz(target: tuple[str, str], args: Any) -> None:
            def direct() -> tuple[bool, str]:
                res = reg.call(target[0], target[1], args, env="dev")
                return res.executed, res.decision

            def adapter() -> tuple[bool, str]:
                import json

                outcome = json.loads(lc_tool.invoke(args if args is not None else {}))
                return outcome["executed"], outcome["decision"]

            once(direct)
            once(adapter)

        fuzz()
        out.audit_ok = log.verify().ok
    return out
