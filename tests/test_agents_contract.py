"""Contract: the AutoGen and CrewAI paths speak the OpenAI chat-completions protocol (tools, tool_calls, tool
results) to any OpenAI-compatible server (AUTOOPT_LLM_BASE_URL). The server here is a scripted FastAPI app on
127.0.0.1; the tools still go through the real registry and PDP."""

from __future__ import annotations

import json

import pytest
from fastapi import FastAPI, Request
from support.agent_world import demo_registry, serve

from autooptimizer.settings import get_settings


def _reply(content: str | None = None, call: tuple[str, dict] | None = None, n: int = 0) -> dict:
    msg: dict = {"role": "assistant", "content": content}
    if call:
        msg["tool_calls"] = [{"id": f"call_{n}", "type": "function",
                              "function": {"name": call[0], "arguments": json.dumps(call[1])}}]
    return {"id": f"chatcmpl-{n}", "object": "chat.completion", "created": 0, "model": "fake-model",
            "choices": [{"index": 0, "message": msg, "finish_reason": "tool_calls" if call else "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}


def fake_llm_app(requests: list[dict]) -> FastAPI:
    """Answers like a tool-calling model: supervisor delegates to metrics, metrics checks the gates and reports."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def completions(request: Request) -> dict:
        body = await request.json()
        requests.append({"body": body, "auth": request.headers.get("authorization")})
        n = len(requests)
        tools = {t["function"]["name"] for t in body.get("tools") or []}
        msgs = body["messages"]
        tool_msgs = [m for m in msgs if m.get("role") == "tool"]
        text = " ".join(str(m.get("content")) for m in msgs)
        if "check_quality_gates" in tools:  # the metrics agent (AutoGen or CrewAI)
            if not any("check_quality_gates" in str(m.get("content")) for m in tool_msgs):
                return _reply(call=("check_quality_gates", {}), n=n)
            if "transfer_to_supervisor" in tools:
                return _reply(call=("transfer_to_supervisor", {"message": "gates checked: ndcg_drop firing"}), n=n)
            return _reply("gates checked: ndcg_drop firing", n=n)
        if "transfer_to_metrics" in tools:  # AutoGen supervisor
            if "gates checked" in text:
                return _reply("Final: the NDCG gate fires.", n=n)
            return _reply(call=("transfer_to_metrics", {"message": "check the quality gates"}), n=n)
        if "delegate_work_to_coworker" in tools:  # CrewAI manager
            if tool_msgs:
                return _reply("Final: the NDCG gate fires.", n=n)
            return _reply(call=("delegate_work_to_coworker", {"task": "check the quality gates", "context": "none",
                                                               "coworker": "Metrics analyst"}), n=n)
        return _reply("I have no tools for that.", n=n)

    return app


@pytest.fixture
def llm_server(monkeypatch):
    requests: list[dict] = []
    with serve(fake_llm_app(requests)) as url:
        monkeypatch.setenv("AUTOOPT_LLM_BASE_URL", f"{url}/v1")
        monkeypatch.setenv("AUTOOPT_LLM_MODEL", "fake-model")
        monkeypatch.setenv("OPENAI_API_KEY", "sk-contract-test-key-000000")
        get_settings.cache_clear()
        yield requests


def _check_protocol(requests: list[dict]) -> None:
    assert requests and all(r["body"]["model"] in ("fake-model", "openai/fake-model") for r in requests)
    assert all(r["auth"] == "Bearer sk-contract-test-key-000000" for r in requests)
    with_tools = [r for r in requests if r["body"].get("tools")]
    assert with_tools and all(t["type"] == "function" and "parameters" in t["function"]
                              for r in with_tools for t in r["body"]["tools"])
    # a tool result goes back as a role=tool message answering the model's tool_call id
    answered = [m for r in requests for m in r["body"]["messages"] if m.get("role") == "tool"]
    asked = {c["id"] for r in requests for m in r["body"]["messages"] if m.get("role") == "assistant"
             for c in m.get("tool_calls") or []}
    assert answered and all(m["tool_call_id"] in asked for m in answered)


def test_autogen_team_speaks_openai_protocol(llm_server):
    from autooptimizer.agents.chat import run_chat
    from autooptimizer.agents.llm import backend

    assert backend() == "openai_compatible"
    reg, world = demo_registry()
    res = run_chat("NDCG dropped, what is wrong?", registry=reg)
    assert res.backend == "openai_compatible" and res.routed_to == "metrics"
    assert [(c.agent, c.tool, c.decision, c.executed) for c in res.tool_calls] == [
        ("metrics", "check_quality_gates", "permit", True)]
    assert world.executed == [("check_quality_gates", {"env": None})]
    assert res.answer == "Final: the NDCG gate fires."
    _check_protocol(llm_server)


def test_crewai_crew_speaks_openai_protocol(llm_server):
    from autooptimizer.crews import optimization_crew

    reg, world = demo_registry()
    crew = optimization_crew(registry=reg)
    out = crew.kickoff(inputs={"goal": "NDCG dropped, what is wrong?"})
    assert "NDCG gate fires" in out.raw
    assert [(c["agent"], c["tool"], c["executed"]) for c in crew.last_run.tool_calls] == [
        ("metrics", "check_quality_gates", True)]
    assert [name for name, _ in world.executed] == ["check_quality_gates"]
    _check_protocol(llm_server)
