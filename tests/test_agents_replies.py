"""agents/replies.py: which chat-completion bodies are usable, the error a bad one becomes, and how it is found again
inside the OpenAI SDK's wrapping. The whole path, through a real HTTP server and run_chat, is in
tests/test_agents_budgets.py."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from support.scripted_llm import reply

from autooptimizer.agents.budgeted_client import explain_error, retryable
from autooptimizer.agents.budgets import LLMError
from autooptimizer.agents.replies import BadReply, bad_reply, llm_error_in, reply_problem


def test_a_completion_with_a_choice_is_usable() -> None:
    assert reply_problem(json.dumps(reply("hello")).encode()) is None


@pytest.mark.parametrize(("body", "kind", "words"), [
    (b"<html>502</html>", "invalid_json", "it begins '<html>502</html>'"),
    (b'{"choices": [', "invalid_json", "not valid JSON"),
    (b"\xff\xfe garbage", "invalid_json", "not valid JSON"),
    (b"", "invalid_json", "not valid JSON"),
    (b'{"choices": []}', "no_choices", "an empty `choices` list"),
    (b'{"choices": null}', "no_choices", "`choices` = null"),
    (b'{"id": "x"}', "no_choices", "no choices"),
    (b"[1, 2]", "no_choices", "JSON list, not a chat completion object"),
    (b'{"choices": [{"index": 0}]}', "no_choices", "whose first choice has no message"),
    (b'{"choices": [{"index": 0, "message": null}]}', "no_choices", "whose first choice has no message"),
    (b'{"choices": ["x"]}', "no_choices", "whose first choice has no message"),
])
def test_a_body_that_is_not_a_usable_completion_is_named(body: bytes, kind: str, words: str) -> None:
    problem = reply_problem(body)
    assert problem is not None and problem[0] == kind and words in problem[1]


def test_the_error_names_the_server_and_the_fix() -> None:
    err = bad_reply("no_choices", "a chat completion with no choices (an empty `choices` list)", "http://h:1/v1")
    assert err.kind == "no_choices" and err.reason.startswith("The model server at http://h:1/v1 answered a chat")
    assert "AUTOOPT_LLM_MODEL" in err.reason and "server's log" in err.reason
    assert "AUTOOPT_LLM_BASE_URL" in bad_reply("invalid_json", "x", None).reason


def test_a_bad_reply_wrapped_by_the_sdk_is_found_and_not_retried() -> None:
    bad = BadReply("invalid_json", "The model server at u answered a body that is not valid JSON.")
    request = httpx.Request("POST", "http://127.0.0.1:9/v1/chat/completions")
    try:
        try:
            raise bad
        except BadReply as inner:
            raise openai.APIConnectionError(request=request) from inner  # what the SDK does with a hook's error
    except openai.APIConnectionError as exc:
        wrapped = exc
    assert llm_error_in(wrapped) is bad and explain_error(wrapped) is bad
    assert retryable(wrapped) is False
    plain = openai.APIConnectionError(request=request)
    assert llm_error_in(plain) is None and retryable(plain) is True
    assert explain_error(plain).kind == "connection"
    assert isinstance(bad, LLMError)
