"""The console's pages and forms through the real app (TestClient), over real state: a promotion cycle run by the
real loop on the tiny search service (dev, A/B and watch from a SyntheticSource), real approvals, the real audit log.
The same rules in a real browser: tests/test_console_browser.py."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support.tiny_stack import start_tiny_service

from autooptimizer.api.app import create_app
from autooptimizer.settings import get_settings
from autooptimizer.testing import SyntheticSource

TOKEN = "console-pages-token"
LOOPBACK = ("127.0.0.1", 50001)
TEMPLATES = Path(__file__).resolve().parents[1] / "autooptimizer" / "console" / "templates"


@pytest.fixture()
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    from autooptimizer.loop.cycle import CycleOptions, CycleRunner
    from autooptimizer.policies.approvals import ApprovalStore

    monkeypatch.setenv("AUTOOPT_API_TOKEN", TOKEN)
    svc = start_tiny_service(tmp_path, monkeypatch, ["v-a", "v-b"])
    rec = CycleRunner(source=SyntheticSource({"v-a": 0.4, "v-b": 0.7})).run(
        CycleOptions(gate="ndcg_drop", challenger="v-b", watch_seconds=1))
    assert rec.outcome == "promoted", rec.summary.get("reason")
    req = ApprovalStore().request(tool="scale_service", agent="devops", env="dev", args={"replicas": 4},
                                  reason="test <b>reason</b>", policies=["p.test"], requested_by="test",
                                  evidence={"cycle_id": rec.id}, cycle_id=rec.id)
    yield {"cycle": rec, "request": req, "service": svc}
    svc.stop()


def _client(host: tuple[str, int] = LOOPBACK) -> TestClient:
    # https: the console's cookies are Secure, and a client only sends those over https
    return TestClient(create_app(start_scheduler=False), base_url="https://testserver", client=host)


def _csrf(client: TestClient, path: str = "/ui/login") -> str:
    page = client.get(path)
    found = re.search(r'name="csrf" value="([0-9a-f]{64})"', page.text)
    assert found, page.text[:500]
    return found.group(1)


def _signed_in(name: str = "alice") -> tuple[TestClient, str]:
    client = _client()
    csrf = _csrf(client)
    r = client.post("/ui/session", data={"csrf": csrf, "token": TOKEN, "name": name, "next": "/ui/approvals"},
                    follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui/approvals"
    return client, csrf


def test_every_page_renders_the_state_for_loopback(world: dict[str, Any]) -> None:
    client, cycle = _client(), world["cycle"]
    pages = {"/ui": ["ndcg_drop", "p95_latency", "cost_budget", "retries", cycle.id, "promoted"],
             f"/ui/cycles/{cycle.id}": ["start_ab_test", "dev.promote", "ab-hist", "Canary v-b", "Watch window"],
             "/ui/approvals": [world["request"].id, "scale_service", "p.test", "test &lt;b&gt;reason&lt;/b&gt;"],
             "/ui/models": ['data-version="v-a"', 'data-version="v-b"', "champion"],
             "/ui/traces": [cycle.trace_id[:12]], f"/ui/traces/{cycle.trace_id}": ["step:ab_test"],
             "/ui/chat": ["chat-form"], "/ui/audit": ['data-ok="true"', "approval_requested"]}
    for path, words in pages.items():
        r = client.get(path)
        assert r.status_code == 200, (path, r.text[:300])
        assert all(w in r.text for w in words), (path, [w for w in words if w not in r.text])
        assert "script-src 'self'" in r.headers["content-security-policy"] and r.headers["x-frame-options"] == "DENY"
    assert client.get("/ui/cycles/si_1999_01_01_001").status_code == 404
    assert "approval_requested" not in client.get("/ui/audit?q=kill_switch").text
    assert client.get("/ui/audit?page=notanumber").status_code == 200


def test_templates_never_turn_off_escaping() -> None:
    from autooptimizer.console.web import environment

    assert environment().autoescape is True
    for path in TEMPLATES.glob("*.html"):
        text = path.read_text()
        assert "|safe" not in text.replace(" ", "") and "autoescape false" not in text and "Markup" not in text, path


def test_reads_from_elsewhere_get_the_sign_in_page(world: dict[str, Any]) -> None:
    remote = _client(("203.0.113.9", 40000))
    r = remote.get("/ui/approvals")
    assert r.status_code == 401 and 'id="login-form"' in r.text and world["request"].id not in r.text
    assert remote.get("/ui/cycles/x/artifacts/summary.json").status_code == 401
    assert remote.get("/ui/static/htmx.min.js").status_code == 200  # static assets hold no state
    csrf = _csrf(remote)
    assert remote.post("/ui/session", data={"csrf": csrf, "token": TOKEN}, follow_redirects=False).status_code == 303
    assert remote.get("/ui/approvals").status_code == 200  # with the token, a remote reader may read


def test_signing_in_takes_the_token_and_answers_like_the_api(world: dict[str, Any],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    client = _client()
    csrf = _csrf(client)
    wrong = client.post("/ui/session", data={"csrf": csrf, "token": "nope"})
    assert wrong.status_code == 403 and "Wrong bearer token." in wrong.text
    empty = client.post("/ui/session", data={"csrf": csrf, "token": ""})
    assert empty.status_code == 401 and empty.headers["www-authenticate"] == "Bearer"
    assert client.post("/ui/session", data={"token": TOKEN}).status_code == 403  # no CSRF field
    bad_name = client.post("/ui/session", data={"csrf": csrf, "token": TOKEN, "name": "<b>x</b>"})
    assert bad_name.status_code == 400 and "<b>" not in bad_name.text
    ok = client.post("/ui/session", data={"csrf": csrf, "token": TOKEN, "name": "alice", "next": "https://evil.example/"},
                     follow_redirects=False)
    assert ok.headers["location"] == "/ui"  # never a redirect out of the console
    cookie = next(v for k, v in ok.headers.multi_items() if k == "set-cookie" and v.startswith("autoopt_session="))
    assert all(flag in cookie.lower() for flag in ("secure", "httponly", "samesite=strict", "path=/ui"))
    assert TOKEN not in cookie and "max-age" not in cookie.lower()  # a browser-session cookie, token-free
    monkeypatch.delenv("AUTOOPT_API_TOKEN")
    get_settings.cache_clear()
    bare = _client()
    csrf = _csrf(bare)
    assert bare.post("/ui/session", data={"csrf": csrf, "token": TOKEN}).status_code == 403


def test_the_kill_switch_form_needs_session_and_csrf(world: dict[str, Any]) -> None:
    from autooptimizer.policies.audit import AuditLog
    from autooptimizer.policies.killswitch import kill_switch

    anonymous = _client()
    csrf = _csrf(anonymous)
    assert anonymous.post("/ui/kill-switch", data={"csrf": csrf, "state": "on"}).status_code == 401
    client, csrf = _signed_in()
    assert client.post("/ui/kill-switch", data={"state": "on"}).status_code == 403
    assert client.post("/ui/kill-switch", data={"csrf": csrf, "state": "on"},
                       headers={"Origin": "https://evil.example"}).status_code == 403
    assert client.post("/ui/kill-switch", data={"csrf": csrf, "state": "maybe"}).status_code == 400
    assert kill_switch.is_on() is False
    r = client.post("/ui/kill-switch", data={"csrf": csrf, "state": "on", "reason": "incident"},
                    follow_redirects=False)
    assert r.status_code == 303 and kill_switch.state().on and kill_switch.state().by == "console:alice"
    last = list(AuditLog().records())[-1]
    assert (last["kind"], last["actor"], last["on"], last["reason"]) == ("kill_switch", "console:alice", True,
                                                                         "incident")
    assert 'data-on="true"' in client.get("/ui/fragments/kill-switch").text


def test_decisions_are_the_stores_and_a_second_one_is_a_conflict(world: dict[str, Any]) -> None:
    from autooptimizer.policies.approvals import ApprovalStore

    req = world["request"]
    client, csrf = _signed_in("bob")
    note = "<script>alert(1)</script> ok"
    r = client.post(f"/ui/approvals/{req.id}/approve", data={"csrf": csrf, "note": note, "next": "/ui/approvals"},
                    follow_redirects=False)
    assert r.status_code == 303
    got = ApprovalStore().get(req.id)
    assert (got.status, got.decided_by, got.note) == ("approved", "console:bob", note)
    page = client.get("/ui/approvals").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; ok" in page and "<script>alert" not in page
    assert client.post(f"/ui/approvals/{req.id}/deny", data={"csrf": csrf}).status_code == 409
    assert client.post("/ui/approvals/apr-000000000000/deny", data={"csrf": csrf}).status_code == 404
    assert client.post(f"/ui/approvals/{req.id}/delete", data={"csrf": csrf}).status_code == 404


def test_each_change_form_refuses_in_the_apis_order(world: dict[str, Any]) -> None:
    """The token first, then (approvals) the verb, then the body's size and CSRF, then the form's own fields."""
    from autooptimizer.policies.approvals import ApprovalStore

    req = world["request"]
    changes = ["/ui/kill-switch", f"/ui/approvals/{req.id}/approve", "/ui/chat"]
    anonymous = _client()
    csrf = _csrf(anonymous)
    for path in [*changes, f"/ui/approvals/{req.id}/delete"]:
        assert anonymous.post(path, data={"csrf": csrf}).status_code == 401, path
    client, csrf = _signed_in()
    assert client.post(f"/ui/approvals/{req.id}/delete", data={}).status_code == 404  # the verb before CSRF
    big = {"content-type": "application/x-www-form-urlencoded"}
    for path in changes:
        assert client.post(path, data={"state": "on", "goal": "hi", "env": "dev"}).status_code == 403, path
        assert client.post(path, content=b"a=" + b"x" * 70_000, headers=big).status_code == 413, path
    assert client.post("/ui/chat", data={"csrf": csrf, "goal": " ", "env": "dev"}).status_code == 400
    assert client.post("/ui/chat", data={"csrf": csrf, "goal": "hi", "env": "moon"}).status_code == 400
    assert ApprovalStore().get(req.id).status == "pending", "no refused form changed anything"


def test_artifacts_download_and_nothing_outside_the_folder(world: dict[str, Any]) -> None:
    client, cycle = _client(), world["cycle"]
    art = Path(cycle.artifacts_dir)
    r = client.get(f"/ui/cycles/{cycle.id}/artifacts/summary.json")
    assert r.status_code == 200 and r.content == (art / "summary.json").read_bytes()
    assert r.headers["content-disposition"].startswith("attachment")
    for name in ("..%2F..%2Fapprovals.db", "%2Fetc%2Fpasswd", "nope.json", "..%2Fsummary.json"):
        assert client.get(f"/ui/cycles/{cycle.id}/artifacts/{name}").status_code == 404, name

