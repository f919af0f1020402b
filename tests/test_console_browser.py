"""The operator console in a real browser: headless Chromium (Debian `chromium` + `chromium-driver`, through
Selenium) against a real `python -m autooptimizer serve` (staging, with a token) over the real state of
tests/support/console_world.py (cycles run by the real loop, a real Prometheus, the real search service).

The tests share one world and run in file order: reads first, then the changes (deny, approve, kill switch).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.browser import chromium, missing
from support.console_world import MARKUP_LABEL, TOKEN, HeldSource, World, apply_env, console_world, run_cycle

pytestmark = pytest.mark.browser
SEVERE = "SEVERE"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    if (why := missing()) is not None:
        pytest.fail(f"The browser tests need headless Chromium: {why}")
    with console_world(tmp_path_factory.mktemp("console")) as w:
        yield w


@pytest.fixture(autouse=True)
def world_env(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """conftest gives every test its own AUTOOPT_HOME; these tests act on the world's."""
    for k, v in world.env.items():
        monkeypatch.setenv(k, v)
    apply_env(world.env)


@pytest.fixture(scope="module")
def browser(world: World) -> Iterator[Any]:
    with chromium() as driver:
        yield driver


def _open(driver: Any, url: str) -> int:
    """Load `url`; the HTTP status of the page the browser shows (console messages of earlier pages dropped)."""
    driver.get_log("browser")
    driver.get(url)
    return _status(driver)


def _submit(driver: Any, button: Any) -> int:
    """Click a form's button and wait for the page it leads to; its HTTP status. The new page is told by a new
    document time origin, not by the old <html> going stale: Chromium answers that staleness probe with "Node with
    given id does not belong to the document" when the navigation lands mid-check."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    origin = driver.execute_script("return performance.timeOrigin")

    def loaded(d: Any) -> bool:
        return (d.execute_script("return performance.timeOrigin") != origin
                and d.execute_script("return document.readyState") == "complete")

    button.click()
    WebDriverWait(driver, 60, ignored_exceptions=(WebDriverException,)).until(loaded)  # a script mid-navigation
    return _status(driver)


def _status(driver: Any) -> int:
    return int(driver.execute_script("return performance.getEntriesByType('navigation')[0].responseStatus"))


def _errors(driver: Any) -> list[str]:
    """Console errors of the page (a CSP violation, a script error, a failed load), favicon aside."""
    return [e["message"] for e in driver.get_log("browser")
            if e["level"] == SEVERE and "favicon.ico" not in e["message"]]


def _wait(predicate: Any, timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, selector))


def _sign_in(driver: Any, world: World, name: str = "alice", token: str = TOKEN) -> int:
    _open(driver, f"{world.url}/ui/login")
    _css(driver, "#token")[0].send_keys(token)
    _css(driver, "#name")[0].send_keys(name)
    return _submit(driver, _css(driver, "#login")[0])


def _approval(store_id: str) -> Any:
    from autooptimizer.policies.approvals import ApprovalStore

    return ApprovalStore().get(store_id)


def _pending_for(world: World, cycle: str) -> str:
    from autooptimizer.policies.approvals import ApprovalStore

    cid = world.cycles[cycle].id
    return next(r.id for r in ApprovalStore().list() if r.cycle_id == cid and r.tool == "promote_model")


# -- reads ----------------------------------------------------------------------------------------------------------
def test_every_page_opens_with_its_content_and_no_console_error(world: World, browser: Any) -> None:
    from autooptimizer.tracing import trace_store

    retrain = world.cycles["retrain"]
    pages = {
        "/ui": "#gates tr.gate[data-gate='ndcg_drop']",
        f"/ui/cycles/{retrain.id}": "#timeline tr.step[data-step='diagnose']",
        f"/ui/cycles/{world.cycles['rollback'].id}": "#rollback",
        "/ui/approvals": "article.approval",
        "/ui/models": "tr[data-version='v1-parent']",
        "/ui/traces": "tr[data-trace]",
        f"/ui/traces/{retrain.trace_id}": "li.span[data-name='step:diagnose']",
        "/ui/chat": "#chat-form",
        "/ui/audit": "#verify[data-ok='true']",
        "/ui/login": "#login-form",
    }
    for path, selector in pages.items():
        assert _open(browser, world.url + path) == 200, path
        assert _css(browser, selector), (path, selector)
        assert browser.execute_script("return typeof window.htmx") == "object", path  # the vendored htmx loaded
        assert (errors := _errors(browser)) == [], (path, errors)
    _open(browser, f"{world.url}/ui/traces/{retrain.trace_id}")
    assert len(_css(browser, "li.span")) == len(trace_store().spans(retrain.trace_id))
    # the overview's four gates, and live: htmx replaces the gates table on its own
    _open(browser, world.url + "/ui")
    assert [e.get_attribute("data-gate") for e in _css(browser, "tr.gate")] == \
        ["ndcg_drop", "p95_latency", "cost_budget", "retries"]
    assert "PromQL: " in _css(browser, "tr.gate")[0].get_attribute("title")  # the evidence on hover
    first = _css(browser, "#gates")[0]
    _wait(lambda: first.id != _css(browser, "#gates")[0].id, 20, "the gates to refresh")
    cycles = [e.get_attribute("data-cycle") for e in _css(browser, "#cycles tr[data-cycle]")]
    assert cycles == [c.id for c in sorted(world.cycles.values(), key=lambda c: c.started_at, reverse=True)]


def test_shap_highlight_and_ab_chart_show_the_artifact_values(world: World, browser: Any) -> None:
    cycle = world.cycles["retrain"]
    art = Path(cycle.artifacts_dir)
    report = json.loads((art / "diagnostic_report.json").read_text())
    ab = json.loads((art / "ab_test_results.json").read_text())
    evaluation = json.loads((art / "evaluation.json").read_text())
    _open(browser, f"{world.url}/ui/cycles/{cycle.id}")
    assert report["explainer"] == "shap" and report["queries"]
    for q, shown in zip(report["queries"], _css(browser, "#diagnostic .explained"), strict=True):
        spans = shown.find_elements("css selector", "span.tok")
        values = [a["value"] for a in q["attributions"]]
        assert [s.text for s in spans] == [a["token"] for a in q["attributions"]]
        assert [float(s.get_attribute("data-value")) for s in spans] == values
        peak = max(abs(v) for v in values)
        for s, v in zip(spans, values, strict=True):
            sign = "pos" if v > 0 else "neg" if v < 0 else "zero"
            assert f"{sign}-{min(5, math.ceil(abs(v) / peak * 5))}" in s.get_attribute("class").split()
            if v != 0:  # a visible highlight, stronger for the larger attribution
                assert s.value_of_css_property("background-color") != "rgba(0, 0, 0, 0)"
        under = {s.text for s in spans if "uw" in s.get_attribute("class").split()}
        assert all(any(t in tok.lower() for t in q["under_weighted"]) for tok in under)
    # A/B: the per-arm histogram is the artifact's counts, heights proportional to each arm's share
    for arm in ("control", "treatment"):
        counts = ab[arm]["ndcg_histogram"]
        bars = _css(browser, f"#ab-hist rect.bar[data-arm='{arm}']")
        assert [int(b.get_attribute("data-count")) for b in bars] == counts
        tallest = max(range(len(counts)), key=lambda i: counts[i])
        for b, c in zip(bars, counts, strict=True):
            expected = c / counts[tallest] * float(bars[tallest].get_attribute("height"))
            assert abs(float(b.get_attribute("height")) - expected) <= 0.2
    ci = _css(browser, "#ab-ci")[0]
    q = ab["quality"]
    assert [float(ci.get_attribute(k)) for k in ("data-estimate", "data-low", "data-high")] == \
        [q["delta_mean"], q["ci_low"], q["ci_high"]]
    assert _css(browser, "#p-greater")[0].text == format(q["p_value_greater"], ".3g")
    assert _css(browser, "#ab-verdict")[0].text == ab["verdict"]
    rows = {r.get_attribute("data-role"): r for r in _css(browser, "#evaluation tr[data-role]")}
    for role in ("champion", "challenger"):
        cells = [c.text for c in rows[role].find_elements("css selector", "td[data-domain]")]
        side = evaluation[role]
        assert cells == [format(side["new_domain_ndcg@10"], ".4f"), format(side["original_ndcg@10"], ".4f")]
    # every artifact can be downloaded, byte for byte
    links = _css(browser, "#artifacts a[download]")
    assert {a.text for a in links} == {p.name for p in art.iterdir() if p.is_file()}
    got = httpx.get(f"{world.url}/ui/cycles/{cycle.id}/artifacts/ab_test_results.json")
    assert got.content == (art / "ab_test_results.json").read_bytes()
    assert got.headers["content-disposition"].startswith("attachment")


# -- changes ----------------------------------------------------------------------------------------------------------
def test_a_change_without_the_token_is_refused_as_the_api_refuses_it(world: World, browser: Any) -> None:
    from autooptimizer.policies.killswitch import kill_switch

    browser.delete_all_cookies()
    _open(browser, world.url + "/ui")
    assert _submit(browser, _css(browser, "#kill-on")[0]) == 401
    assert "Missing bearer token" in _css(browser, "#refusal")[0].text
    assert kill_switch.is_on() is False
    assert _sign_in(browser, world, token="not-the-token") == 403
    assert _css(browser, "#refusal")[0].text == "Wrong bearer token."
    assert not [c for c in browser.get_cookies() if c["name"] == "autoopt_session"]
    # the same statuses as the API, for the same requests outside a browser
    api = httpx.post(f"{world.url}/api/v1/optimizer/kill-switch/on", headers={"Authorization": "Bearer nope"})
    page = httpx.post(f"{world.url}/ui/kill-switch", headers={"Authorization": "Bearer nope"}, data={"state": "on"})
    assert (api.status_code, page.status_code) == (403, 403) and "Wrong bearer token." in page.text
    forged = httpx.post(f"{world.url}/ui/kill-switch", cookies={"autoopt_session": "e30.deadbeef"},
                        data={"state": "on"})
    assert forged.status_code == 403 and kill_switch.is_on() is False
    # signed in, a form without its CSRF token is refused too
    assert _sign_in(browser, world) == 200
    session = next(c["value"] for c in browser.get_cookies() if c["name"] == "autoopt_session")
    cookie = next(c for c in browser.get_cookies() if c["name"] == "autoopt_session")
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
    no_csrf = httpx.post(f"{world.url}/ui/kill-switch", cookies={"autoopt_session": session}, data={"state": "on"})
    assert no_csrf.status_code == 403 and "CSRF" in no_csrf.text and kill_switch.is_on() is False


def test_deny_one(world: World, browser: Any) -> None:
    from autooptimizer.policies.audit import AuditLog

    request_id = _pending_for(world, "promote-c")
    _sign_in(browser, world)
    _open(browser, world.url + "/ui/approvals")
    card = _css(browser, f"article.approval[data-id='{request_id}']")[0]
    assert "promote_model" in card.text and '"model_version": "v-c"' in card.text
    assert "staging.promote-approval" in card.find_element("css selector", ".policies").text
    assert card.find_elements("css selector", "#ab-hist rect.bar")  # the A/B evidence behind the promotion
    card.find_element("css selector", "input.note").send_keys("v-c loses to v-b")
    assert _submit(browser, card.find_element("css selector", "button.deny")) == 200
    assert not _css(browser, f"article.approval[data-id='{request_id}']")
    row = _css(browser, f"table.decided tr[data-id='{request_id}']")[0]
    assert row.get_attribute("data-status") == "denied"
    assert row.find_element("css selector", ".decided-by").text == "console:alice"
    req = _approval(request_id)
    assert (req.status, req.decided_by, req.note) == ("denied", "console:alice", "v-c loses to v-b")
    audited = [r for r in AuditLog().records() if r.get("approval_id") == request_id]
    assert [(r["kind"], r["actor"]) for r in audited][-1] == ("approval_denied", "console:alice")


def test_approve_by_click_then_the_paused_cycle_promotes_and_uses_it(world: World, browser: Any) -> None:
    from autooptimizer.loop.release import Release
    from autooptimizer.policies.audit import AuditLog

    request_id = _pending_for(world, "promote-b")
    _sign_in(browser, world)
    _open(browser, world.url + "/ui/approvals")
    card = _css(browser, f"article.approval[data-id='{request_id}']")[0]
    card.find_element("css selector", "input.note").send_keys("A/B clear win")
    assert _submit(browser, card.find_element("css selector", "button.approve")) == 200
    assert _approval(request_id).status == "approved"
    # the cycle that stopped for it continues (the next cycle, as `autoopt trigger` runs it) and uses it once
    rec = run_cycle(world, watch_seconds=1)
    assert rec.outcome == "promoted", rec.summary.get("reason")
    assert rec.summary["approval_id"] == request_id and rec.summary["approved_by"] == "console:alice"
    assert Release().git.read_patch().model_version == "v-b"
    req = _approval(request_id)
    assert req.status == "used" and req.used_at is not None
    kinds = [(r["kind"], r["actor"]) for r in AuditLog().records() if r.get("approval_id") == request_id]
    assert ("approval_approved", "console:alice") in kinds and ("approval_used", "registry") in kinds
    _open(browser, world.url + "/ui/approvals")
    row = _css(browser, f"table.decided tr[data-id='{request_id}']")[0]
    assert row.get_attribute("data-status") == "used"
    _open(browser, f"{world.url}/ui/cycles/{rec.id}")
    promote = _css(browser, "#timeline tr.step[data-step='promote'] .decision")[0]
    assert promote.get_attribute("data-decision") == "permit"
    assert promote.get_attribute("data-policies") == "staging.promote-approved"
    # single use: approving it again is refused as the API refuses a second decision
    again = httpx.post(f"{world.url}/api/v1/optimizer/approvals/{request_id}/approve",
                       headers={"Authorization": f"Bearer {TOKEN}"})
    assert again.status_code == 409


def test_a_paused_chat_is_approved_inline_and_continues(world: World, browser: Any) -> None:
    from autooptimizer.search import model_store

    _sign_in(browser, world)
    _open(browser, world.url + "/ui/chat")
    _css(browser, "#goal")[0].send_keys("delete model version v-old1")
    _css(browser, "#chat-env option[value='staging']")[0].click()
    assert _submit(browser, _css(browser, "#send")[0]) == 200
    _wait(lambda: _css(browser, "#turns[data-status='paused']"), 240, "the chat to pause")
    card = _css(browser, "#turns article.inline-approval")[0]
    request_id = card.get_attribute("data-id")
    assert "delete_model" in card.text and "staging.delete-model-approval" in card.text
    assert _approval(request_id).args == {"version": "v-old1"} and model_store.exists("v-old1")
    assert _submit(browser, card.find_element("css selector", "button.approve")) == 200
    _wait(lambda: _css(browser, "#turns[data-status='completed']"), 240, "the resumed chat to complete")
    assert not model_store.exists("v-old1")
    req = _approval(request_id)
    assert (req.status, req.decided_by) == ("used", "console:alice")


def test_kill_switch_stops_a_running_cycle_at_its_next_call(world: World, browser: Any) -> None:
    from autooptimizer.loop.gitops import HelmPatch
    from autooptimizer.loop.release import Release
    from autooptimizer.policies.killswitch import kill_switch

    Release().deploy(HelmPatch(model_version="v-bad", replicas=1), "operator: try v-bad again")
    source = HeldSource({"v-b": 0.85, "v-bad": 0.05}, hold="v-bad")
    done: list[Any] = []
    cycle = threading.Thread(target=lambda: done.append(run_cycle(world, source, gate="deploy_watch",
                                                                  watch_seconds=30)))
    cycle.start()
    try:
        assert source.entered.wait(60), "the cycle never reached its watch"
        _sign_in(browser, world)
        _open(browser, world.url + "/ui")
        _wait(lambda: _css(browser, "#cycles .running li.step[data-step='watch'][data-status='started']"), 20,
              "the overview to show the running cycle in its watch")
        _css(browser, "#kill-form input[name='reason']")[0].send_keys("stop the loop")
        assert _submit(browser, _css(browser, "#kill-on")[0]) == 200
        assert _css(browser, "#kill-state")[0].get_attribute("data-on") == "true"
        assert kill_switch.state().on and kill_switch.state().by == "console:alice"
    finally:
        source.release.set()  # the watch sees v-bad degrade: its next call is rollback_deployment
        cycle.join(120)
    rec = done[0]
    assert rec.outcome == "denied" and "rollback_deployment denied" in rec.summary["reason"]
    assert Release().git.read_patch().model_version == "v-bad"  # stopped: nothing changed after the switch
    _open(browser, f"{world.url}/ui/cycles/{rec.id}")
    denied = _css(browser, "#timeline tr.step[data-step='rollback'] .decision")[0]
    assert (denied.get_attribute("data-decision"), denied.get_attribute("data-policies")) == \
        ("deny", "shared.kill-switch")
    _open(browser, world.url + "/ui")
    assert _submit(browser, _css(browser, "#kill-off")[0]) == 200
    assert kill_switch.is_on() is False


def test_nothing_leaks_and_no_text_runs_as_markup(world: World, browser: Any) -> None:
    from autooptimizer.policies.approvals import ApprovalStore

    goal = '<script>window.__xss=2</script><img src=x onerror="window.__xss=3">what is the p95 latency?'
    document = '<img src=x onerror="window.__xss=4"><b>doc</b>'
    ApprovalStore().request(tool="augment_dataset", agent="data", env="staging", args={"document": document},
                            reason="test: a document with markup", policies=["shared.change-by-owner"],
                            evidence={"document": document}, requested_by="test")
    _sign_in(browser, world)
    _open(browser, world.url + "/ui/chat")
    _css(browser, "#goal")[0].send_keys(goal)
    assert _submit(browser, _css(browser, "#send")[0]) == 200
    assert _css(browser, "#chat-goal")[0].text == goal
    _wait(lambda: _css(browser, "#turns:not([data-status='running'])"), 240, "the chat to finish")
    assert _css(browser, "#turns")[0].get_attribute("data-status") in ("completed", "refused"), \
        _css(browser, "#turns")[0].text
    trace = _css(browser, "#turns a[href^='/ui/traces/']")[0].get_attribute("href")
    pages = [browser.current_url, trace, world.url + "/ui/approvals", world.url + "/ui"]
    sources = []
    for url in pages:
        _open(browser, url)
        sources.append(browser.page_source)
        assert browser.execute_script("return window.__xss") is None, url
        assert browser.execute_script("return document.querySelectorAll('script:not([src]), img').length") == 0
        assert (errors := _errors(browser)) == [], (url, errors)
    _open(browser, world.url + "/ui/approvals")
    shown = [e.text for e in _css(browser, "pre.args")]
    assert json.dumps({"document": document}, indent=2, ensure_ascii=False) in shown
    _open(browser, world.url + "/ui")
    _wait(lambda: MARKUP_LABEL in [e.text for e in _css(browser, ".legend-label")], 45, "the markup label")
    # the token: never in a page, a cookie, the server's log or anything the server keeps
    assert not any(TOKEN in s for s in sources + [browser.page_source])
    assert not any(TOKEN in c["value"] for c in browser.get_cookies())
    assert world.server is not None and TOKEN not in world.server.log_path.read_text(errors="replace")
    leaked = [p for p in world.home.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]
    assert leaked == []
