"""Issue 15's three failures, each on cue from a real HTTP server that speaks the OpenAI protocol
(tests/support/scripted_llm.py), through the product's real AutoGen client, registry, PDP and audit log:

1. no reply budget: every request carries the profile's max_tokens; a server that hangs is timed out and retried,
   then the run ends as an error;
2. no run budget: the same call with the same arguments, or a handoff ping-pong, stops the run (budget_exceeded);
3. errors become tracebacks: 400 context overflow, 5xx, connection refused, a reply that is not JSON or has no
   choices, malformed tool-call JSON and made-up tools end the run with status error and a reason;
   `autoopt chat --json` prints JSON and exits 1.
And the intent bound on the LLM path: a question's run cannot use a change tool, whatever the model asks for.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from support.agent_world import demo_registry
from support.scripted_llm import ScriptedLLM, reply
from typer.testing import CliRunner

from autooptimizer.agents.chat import run_chat
from autooptimizer.infra.net import free_port
from autooptimizer.policies.audit import AuditLog
from autooptimizer.settings import get_settings

GOAL = "NDCG dropped, fix the reranker"


@pytest.fixture
def llm_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Point the agents at a URL with a profile whose `llm:` budgets the test sets (an operator's edit)."""
    src = Path(__file__).resolve().parents[1] / "autooptimizer" / "profiles"
    prof = tmp_path / "profiles"
    prof.mkdir()
    for f in src.glob("*.yaml"):
        (prof / f.name).write_text(f.read_text())
    monkeypatch.setenv("AUTOOPT_PROFILES_DIR", str(prof))
    monkeypatch.setenv("AUTOOPT_LLM_MODEL", "scripted")

    def configure(url: str, **llm: object) -> None:
        data = yaml.safe_load((prof / "dev.yaml").read_text())
        data["llm"].update({"requestTimeoutSeconds": 5, "retries": 0, "retryBackoffSeconds": 0, **llm})
        (prof / "dev.yaml").write_text(yaml.safe_dump(data))
        monkeypatch.setenv("AUTOOPT_LLM_BASE_URL", url)
        get_settings.cache_clear()

    return configure


def _stops() -> list[dict]:
    return [r for r in AuditLog().records() if r.get("kind") == "run_stop"]


def to(agent: str, message: str = "go") -> dict:
    return reply(tool=(f"transfer_to_{agent}", {"message": message}))


# --- 1. the reply budget ---------------------------------------------------------------------------------------------
def test_every_request_carries_max_tokens_and_an_endless_reply_is_cut(llm_env):
    with ScriptedLLM([reply("blah " * 50, finish="length")]) as llm:
        llm_env(llm.url, maxTokensPerReply=64)
        res = run_chat(GOAL, env="dev", registry=demo_registry()[0])
    assert llm.requests and all(r["max_tokens"] == 64 for r in llm.requests)
    assert res.status == "completed" and res.usage.turns == 1 and res.usage.completion_tokens == 20


def test_a_hanging_server_is_timed_out_retried_then_the_run_ends_as_an_error(llm_env):
    with ScriptedLLM([{"hang": 4}]) as llm:
        llm_env(llm.url, requestTimeoutSeconds=0.5, retries=1, retryBackoffSeconds=0)
        res = run_chat(GOAL, env="dev", registry=demo_registry()[0])
    assert len(llm.requests) == 2  # the first try and one retry
    assert (res.status, res.stop_kind) == ("error", "timeout")
    assert "requestTimeoutSeconds" in res.reason and res.tool_calls == []
    assert [s["stop_kind"] for s in _stops()] == ["timeout"]


# --- 2. the run budget -----------------------------------------------------------------------------------------------
def test_the_same_call_with_the_same_arguments_stops_the_run(llm_env):
    reg, world = demo_registry()
    same = reply(tool=("query_metrics", {"promql": "up"}))
    with ScriptedLLM([to("metrics"), same]) as llm:  # the last cue repeats: the model loops
        llm_env(llm.url, maxIdenticalToolCalls=2)
        res = run_chat(GOAL, env="dev", registry=reg)
    assert (res.status, res.stop_kind) == ("budget_exceeded", "maxIdenticalToolCalls")
    # the partial record: two calls ran through the PDP; the third was never made
    assert [(c.tool, c.decision, c.executed) for c in res.tool_calls] == [("query_metrics", "permit", True)] * 2
    assert [name for name, _ in world.executed] == ["query_metrics"] * 2
    (stop,) = _stops()
    assert stop["decision"] == "budget_exceeded" and stop["trace_id"] == res.trace_id
    assert stop["usage"]["tool_calls"] == 2
    decisions = [r for r in AuditLog().records() if r.get("kind") == "decision" and r.get("tool") == "query_metrics"]
    assert len(decisions) == 2


def test_a_handoff_ping_pong_stops_the_run(llm_env):
    with ScriptedLLM([to("metrics"), to("supervisor")] * 10) as llm:
        llm_env(llm.url, maxPingPong=2)
        res = run_chat(GOAL, env="dev", registry=demo_registry()[0])
    assert (res.status, res.stop_kind) == ("budget_exceeded", "maxPingPong")
    assert len(llm.requests) == 4 and res.tool_calls == []


def test_the_turn_budget_bounds_a_model_that_keeps_calling_different_tools(llm_env):
    calls = [reply(tool=("query_metrics", {"promql": f"up{{i=\"{i}\"}}"})) for i in range(20)]
    with ScriptedLLM([to("metrics"), *calls]) as llm:
        llm_env(llm.url, maxTurns=5)
        res = run_chat(GOAL, env="dev", registry=demo_registry()[0])
    assert (res.status, res.stop_kind) == ("budget_exceeded", "maxTurns")
    assert len(llm.requests) == 5 and len(res.tool_calls) == 4


# --- 3. failure is an answer -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("cue", "kind", "words"), [
    ({"status": 400, "error": "the request exceeds the available context size (n_ctx 2048)"}, "context_overflow",
     "llm.contextTokens"),
    ({"status": 503, "error": "loading model"}, "http_5xx", "503"),
    ({"status": 404, "error": "model not found"}, "http_404", "AUTOOPT_LLM_MODEL"),
])
def test_server_errors_end_the_run_with_status_error_and_a_reason(llm_env, cue, kind, words):
    with ScriptedLLM([cue]) as llm:
        llm_env(llm.url)
        res = run_chat(GOAL, env="dev", registry=demo_registry()[0])
    assert (res.status, res.stop_kind) == ("error", kind) and words in res.reason
    assert [s["stop_kind"] for s in _stops()] == [kind]


@pytest.mark.parametrize(("cue", "kind", "words"), [
    ({"raw": "<html><body>502 Bad Gateway</body></html>", "content_type": "text/html"}, "invalid_json",
     "not valid JSON"),
    ({"raw": '{"id": "chatcmpl-1", "choices": [{"index": 0, "message": {"role": "assist'}, "invalid_json",
     "not valid JSON"),
    ({**reply("hi"), "choices": []}, "no_choices", "an empty `choices` list"),
    ({"raw": '{"id": "chatcmpl-1", "object": "chat.completion"}'}, "no_choices", "no choices"),
    # a choice without a message ended as "AttributeError: 'NoneType' object has no attribute 'function_call'"
    ({"raw": '{"id": "chatcmpl-1", "choices": [{"index": 0, "finish_reason": "stop"}]}'}, "no_choices",
     "whose first choice has no message"),
    ({"raw": '{"id": "chatcmpl-1", "choices": [null]}'}, "no_choices", "whose first choice has no message"),
])
def test_a_reply_that_is_not_a_chat_completion_ends_the_run_with_a_clear_error(llm_env, cue, kind, words):
    with ScriptedLLM([cue]) as llm:
        llm_env(llm.url, retries=2)
        res = run_chat(GOAL, env="dev", registry=demo_registry()[0])
    assert (res.status, res.stop_kind) == ("error", kind)
    assert words in res.reason and llm.url in res.reason  # the problem, and which server
    assert "AUTOOPT_LLM_MODEL" in res.reason and "server's log" in res.reason  # the fix
    assert "JSONDecodeError" not in res.reason and "IndexError" not in res.reason
    assert len(llm.requests) == 1, "a bad reply is not retried"
    assert res.tool_calls == [] and [s["stop_kind"] for s in _stops()] == [kind]


def test_connection_refused_is_an_error_naming_the_server(llm_env):
    url = f"http://127.0.0.1:{free_port()}/v1"
    llm_env(url)
    res = run_chat(GOAL, env="dev", registry=demo_registry()[0])
    assert (res.status, res.stop_kind) == ("error", "connection")
    assert url in res.reason and "autoopt llm serve" in res.reason


def test_a_malformed_call_is_returned_once_and_the_model_may_correct_itself(llm_env):
    reg, world = demo_registry()
    with ScriptedLLM([to("metrics"), reply(tool=("query_metrics", '{"promql": "up"')),
                      reply(tool=("query_metrics", {"promql": "up"})), reply("done")]) as llm:
        llm_env(llm.url)
        res = run_chat(GOAL, env="dev", registry=reg)
    # the third request carries the structured error after the bad call
    feedback = json.loads(llm.requests[2]["messages"][-1]["content"])
    assert feedback["error"] == "malformed_tool_call" and "not valid JSON" in feedback["detail"]
    assert res.status == "completed" and res.usage.malformed_calls == 1
    assert [name for name, _ in world.executed] == ["query_metrics"]


@pytest.mark.parametrize(("bad", "kind"), [
    (reply(tool=("query_metrics", '{"promql": ')), "malformed_tool_call"),
    (reply(tool=("query_metrics", '["up"]')), "malformed_tool_call"),
    (reply(tool=("drop_all_tables", {"now": True})), "unknown_tool"),
])
def test_a_second_bad_call_ends_the_run_with_status_error(llm_env, bad, kind):
    reg, world = demo_registry()
    with ScriptedLLM([to("metrics"), bad]) as llm:
        llm_env(llm.url)
        res = run_chat(GOAL, env="dev", registry=reg)
    assert (res.status, res.stop_kind) == ("error", kind) and "twice in a row" in res.reason
    assert res.usage.malformed_calls == 2 and world.executed == []


def test_args_failing_validation_are_denied_by_the_registry_and_audited(llm_env):
    reg, world = demo_registry()
    with ScriptedLLM([to("metrics"), reply(tool=("query_metrics", {"promql": 42, "extra": "x"})),
                      reply("giving up")]) as llm:
        llm_env(llm.url)
        res = run_chat(GOAL, env="dev", registry=reg)
    (call,) = res.tool_calls
    assert (call.decision, call.executed) == ("deny", False) and world.executed == []
    assert call.error and "promql" in call.error


def test_chat_json_prints_the_error_and_exits_1(llm_env):
    from autooptimizer.cli import app

    with ScriptedLLM([{"status": 400, "error": "context length exceeded"}]) as llm:
        llm_env(llm.url)
        out = CliRunner().invoke(app, ["chat", "What is the p95 latency?", "--env", "dev", "--json"])
    assert out.exit_code == 1
    data = json.loads(out.stdout)
    assert (data["status"], data["stop_kind"]) == ("error", "context_overflow") and data["reason"]


def test_crew_kickoff_json_prints_the_error_and_exits_1(llm_env):
    from autooptimizer.cli import app

    with ScriptedLLM([{"status": 500, "error": "boom"}]) as llm:
        llm_env(llm.url)
        out = CliRunner().invoke(app, ["crew", "kickoff", "--goal", "What is the p95 latency?", "--env", "dev",
                                       "--json"])
    assert out.exit_code == 1
    data = json.loads(out.stdout)
    assert data["status"] == "error" and data["stop_kind"] == "http_5xx" and "500" in data["reason"]


# --- 4. the operator's intent bounds the model -----------------------------------------------------------------------
def test_a_question_cannot_use_a_change_tool_whatever_the_model_asks(llm_env):
    reg, world = demo_registry()
    with ScriptedLLM([to("ml"), reply(tool=("delete_model", {"version": "1"})), reply("done")]) as llm:
        llm_env(llm.url)
        res = run_chat("Why did NDCG drop last night?", env="dev", registry=reg)
    assert res.intent == "question" and "delete_model" not in res.allowed_tools
    (call,) = res.tool_calls
    assert (call.tool, call.decision, call.executed) == ("delete_model", "deny", False)
    assert world.executed == [] and world.versions == ["1"]
    (rec,) = [r for r in AuditLog().records() if r.get("kind") == "decision" and r.get("tool") == "delete_model"]
    assert rec["decision"] == "deny" and "shared.intent-scope" in rec["policies"]
