"""Tracing: one trace per conversation with nested spans in the local store, the CLI renders it, secrets are
redacted everywhere, and with LangSmith configured the same spans reach its OTLP endpoint as one trace."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from support.agent_world import demo_registry, serve
from typer.testing import CliRunner

from autooptimizer.settings import get_settings
from autooptimizer.tools.adapters.common import call_tool
from autooptimizer.tracing import span, start_trace, trace_store
from autooptimizer.tracing.redact import MASK, install_log_redaction, redact

SECRET = "sk-live-0123456789abcdefXYZ"


def test_trace_nests_agent_tool_and_pdp_spans_and_cli_renders_it():
    from autooptimizer.cli.app import app

    reg, _ = demo_registry()
    with start_trace("chat", {"goal": "check gates"}) as tr:
        with tr.span("agent:metrics", kind="agent"):
            call_tool("metrics", "check_quality_gates", {}, reg)
        with tr.span("agent:devops", kind="agent"):
            call_tool("devops", "deploy_canary", {"model_version": "2", "weight": 0.9}, reg)
    spans = {s.name: s for s in trace_store().spans(tr.trace_id)}
    assert spans["chat"].parent_id is None
    assert spans["tool:check_quality_gates"].parent_id == spans["agent:metrics"].span_id
    assert spans["pdp:check_quality_gates"].parent_id == spans["tool:check_quality_gates"].span_id
    assert spans["pdp:deploy_canary"].outputs["decision"] == "deny"
    assert spans["tool:deploy_canary"].outputs["executed"] is False
    # the registry labelled its audit records with this trace id
    from autooptimizer.policies.audit import AuditLog

    assert any(r.get("trace_id") == tr.trace_id for r in AuditLog().records())

    runner = CliRunner()
    listed = runner.invoke(app, ["traces", "list"])
    assert listed.exit_code == 0 and tr.trace_id in listed.output and "check gates" in listed.output
    shown = runner.invoke(app, ["traces", "show", tr.trace_id[:10]])
    assert shown.exit_code == 0
    lines = shown.output.splitlines()
    assert lines[0].startswith("[chain] chat")
    assert any("[policy] pdp:deploy_canary" in ln and "deny" in ln for ln in lines)
    depth = {ln.split("[")[1].split("]")[0]: len(ln) - len(ln.lstrip(" │├└─")) for ln in lines[1:]}
    assert depth["agent"] < depth["tool"] < depth["policy"]
    missing = runner.invoke(app, ["traces", "show", "ffffffff"])
    assert missing.exit_code != 0


def test_secrets_are_redacted_from_spans_and_logs(monkeypatch, caplog):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with start_trace("chat", {"api_key": "abc-secret-123", "goal": f"use {SECRET}"}) as tr, span(
            "tool:x", kind="tool", inputs={"headers": {"Authorization": "Bearer abcdefghijklmnop"},
                                           "note": f"token={SECRET}"}) as sp:
        sp.set_outputs({"echo": f"key {SECRET} and Bearer zzzzzzzzzzzzzzzz"})
    raw = (trace_store().root / f"{tr.trace_id}.jsonl").read_text()
    assert SECRET not in raw and "abcdefghijklmnop" not in raw and "zzzzzzzzzzzzzzzz" not in raw
    assert "abc-secret-123" not in raw and MASK in raw
    assert redact({"password": "hunter22", "n": 1}) == {"password": MASK, "n": 1}

    install_log_redaction()
    with caplog.at_level(logging.INFO):
        logging.getLogger("autooptimizer.test").info("calling with %s and Authorization: Bearer %s", SECRET,
                                                     "qqqqqqqqqqqqqqqq")
    assert SECRET not in caplog.text and "qqqqqqqqqqqqqqqq" not in caplog.text and MASK in caplog.text


def test_langsmith_receives_one_redacted_trace_over_otlp(monkeypatch):
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    received: list[tuple[dict, bytes]] = []
    app = FastAPI()

    @app.get("/info")
    def info() -> dict:
        return {"version": "test"}

    @app.post("/otel/v1/traces")
    async def traces(request: Request) -> dict:
        received.append((dict(request.headers), await request.body()))
        return {}

    with serve(app) as url:
        monkeypatch.setenv("LANGSMITH_API_KEY", "lsv2_pt_testkey_0123456789")
        monkeypatch.setenv("LANGSMITH_ENDPOINT", url)
        get_settings.cache_clear()
        with start_trace("crew.kickoff", {"goal": "g"}) as tr, span("agent:ml", kind="agent"), span(
                "tool:train", kind="tool", inputs={"api_key": "lsv2_pt_testkey_0123456789"}):
            pass
    assert received, "nothing was uploaded"
    headers = received[0][0]
    assert headers.get("x-api-key") == "lsv2_pt_testkey_0123456789"
    spans = []
    for _, body in received:
        req = ExportTraceServiceRequest.FromString(body)
        spans += [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
    names = {s.name for s in spans}
    assert {"crew.kickoff", "agent:ml", "tool:train"} <= names
    assert {s.trace_id.hex() for s in spans} == {tr.trace_id}
    kinds = {s.name: {a.key: a.value.string_value for a in s.attributes}.get("langsmith.span.kind") for s in spans}
    assert kinds["tool:train"] == "tool" and kinds["crew.kickoff"] == "chain"
    assert all(b"lsv2_pt_testkey_0123456789" not in body for _, body in received)

