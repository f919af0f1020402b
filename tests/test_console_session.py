"""The console's session cookie (a signed claim minted from the token) and its CSRF checks."""

from __future__ import annotations

import secrets

import pytest

from autooptimizer.console.session import (
    SESSION_MAX_AGE_S,
    csrf_field,
    csrf_refusal,
    mint_session,
    new_csrf_cookie,
    verify_session,
)

TOKEN = "session-test-token"


def test_a_session_proves_its_name_and_reveals_nothing_of_the_token() -> None:
    value = mint_session("alice", TOKEN, now=1000.0)
    session = verify_session(value, TOKEN, now=1000.0 + 60)
    assert session is not None and session.actor == "console:alice" and session.issued == 1000.0
    assert TOKEN not in value and verify_session(mint_session("bob", TOKEN), TOKEN).name == "bob"


@pytest.mark.parametrize("change", ["other token", "tampered", "expired", "future", "garbage", "no signature"])
def test_anything_but_an_intact_current_session_is_refused(change: str) -> None:
    value, token, now = mint_session("alice", TOKEN, now=1000.0), TOKEN, 1000.0
    payload, sig = value.split(".")
    if change == "other token":
        token = "rotated-token"
    elif change == "tampered":  # the claim says bob, the signature is alice's
        value = mint_session("bob", TOKEN, now=1000.0).split(".")[0] + "." + sig
    elif change == "expired":
        now += SESSION_MAX_AGE_S + 1
    elif change == "future":
        now -= 10
    elif change == "garbage":
        value = "%%%." + sig
    elif change == "no signature":
        value = payload
    assert verify_session(value, token, now=now) is None


def test_csrf_needs_the_field_signed_for_this_cookie_from_this_origin() -> None:
    secret, cookie = secrets.token_bytes(32), new_csrf_cookie()
    good = csrf_field(cookie, secret)
    ok = {"origin": "http://127.0.0.1:8800", "host": "127.0.0.1:8800", "fetch_site": "same-origin"}
    assert csrf_refusal(cookie, good, secret, **ok) is None
    assert csrf_refusal(cookie, good, secret, origin=None, host=None, fetch_site=None) is None  # a non-browser
    assert "no CSRF token" in csrf_refusal(cookie, None, secret, **ok)
    assert "no CSRF token" in csrf_refusal(None, good, secret, **ok)
    assert "does not match" in csrf_refusal(new_csrf_cookie(), good, secret, **ok)  # another browser's field
    assert "does not match" in csrf_refusal(cookie, good, secrets.token_bytes(32), **ok)  # a restarted server
    assert "another origin" in csrf_refusal(cookie, good, secret, **{**ok, "origin": "http://evil.example"})
    assert "another origin" in csrf_refusal(cookie, good, secret, **{**ok, "origin": "null"})
    assert "cross-site" in csrf_refusal(cookie, good, secret, **{**ok, "fetch_site": "cross-site"})
