"""The optimizer API: token-guarded changes, one cycle for concurrent triggers, status/history/metrics."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from support.tiny_stack import start_tiny_service

from autooptimizer.api.app import API, create_app
from autooptimizer.settings import get_settings

TOKEN = "t0ken-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LOOPBACK = ("127.0.0.1", 50000)
CHANGES = [f"{API}/trigger", f"{API}/kill-switch/on", f"{API}/kill-switch/off", f"{API}/approvals/x/approve",
           f"{API}/approvals/x/deny"]


@pytest.fixture()
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("AUTOOPT_API_TOKEN", TOKEN)
    svc = start_tiny_service(tmp_path, monkeypatch, ["v-a", "v-b"])
    # reads are open to loopback clients only (api/access.py); TestClient's default client host is "testclient"
    with TestClient(create_app(), client=LOOPBACK) as c:
        c.service = svc  # type: ignore[attr-defined]
        yield c
        c.app.state.runner.wait(60)
    svc.stop()


@pytest.mark.parametrize("path", CHANGES)
def test_changes_without_token_are_401(client: TestClient, path: str) -> None:
    r = client.post(path)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert client.post(path, headers={"Authorization": "Bearer "}).status_code == 401
    assert client.post(path, headers={"Authorization": TOKEN}).status_code == 401  # not a bearer header


@pytest.mark.parametrize("path", CHANGES)
def test_changes_with_wrong_token_are_403(client: TestClient, path: str) -> None:
    r = client.post(path, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 403 and "Wrong bearer token" in r.text


def test_refused_calls_change_nothing(client: TestClient) -> None:
    client.post(f"{API}/kill-switch/on", headers={"Authorization": "Bearer wrong"})
    client.post(f"{API}/trigger")
    assert client.get(f"{API}/kill-switch").json()["on"] is False
    assert client.get(f"{API}/history").json()["cycles"] == []


def test_no_configured_token_refuses_every_change(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUTOOPT_API_TOKEN")
    get_settings.cache_clear()
    with TestClient(create_app(), client=LOOPBACK) as c:
        r = c.post(f"{API}/kill-switch/on", headers=AUTH)
        assert r.status_code == 403 and "no AUTOOPT_API_TOKEN" in r.text


def test_status_shape(client: TestClient) -> None:
    s = client.get(f"{API}/status").json()
    assert s["is_running"] is False and s["current_cycle"] is None
    assert s["next_cycle_in_minutes"] is None  # dev: scheduler off
    assert s["kill_switch"]["on"] is False
    assert set(s["quality_gates_status"]) == {"ndcg_drop", "p95_latency", "cost_budget", "retries"}
    assert set(s["quality_gates_status"].values()) == {"unknown"}  # no Prometheus: unknown, never ok
    assert client.get("/openapi.json").json()["paths"][f"{API}/trigger"]["post"]


def test_two_concurrent_triggers_start_one_cycle(client: TestClient) -> None:
    barrier = threading.Barrier(2)
    answers: list[int] = []

    def post() -> None:
        barrier.wait()
        answers.append(client.post(f"{API}/trigger", json={"gate": "p95_latency"}, headers=AUTH).status_code)

    threads = [threading.Thread(target=post) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(answers) == [202, 409]
    client.app.state.runner.wait(60)
    cycles = client.get(f"{API}/history?limit=10").json()["cycles"]
    assert len(cycles) == 1 and cycles[0]["outcome"] == "scaled" and cycles[0]["trigger"] == "api"
    assert client.service.service.replicas == 2  # type: ignore[attr-defined]
    detail = client.get(f"{API}/cycles/{cycles[0]['id']}").json()
    assert [s["name"] for s in detail["steps"]] == ["monitor", "supervisor", "scale"]
    metrics = client.get(f"{API}/metrics").text
    assert 'autoopt_optimizer_cycles_total{outcome="scaled"} 1.0' in metrics
    assert "autoopt_optimizer_cycle_running 0.0" in metrics


def test_kill_switch_and_approvals_over_the_api(client: TestClient) -> None:
    r = client.post(f"{API}/kill-switch/on", json={"reason": "maintenance"}, headers=AUTH)
    assert r.status_code == 200 and r.json()["on"] is True and r.json()["by"] == "api"
    assert client.get(f"{API}/status").json()["kill_switch"]["on"] is True
    assert "autoopt_optimizer_kill_switch 1.0" in client.get(f"{API}/metrics").text
    assert client.post(f"{API}/kill-switch/off", headers=AUTH).json()["on"] is False

    from autooptimizer.policies.approvals import ApprovalStore

    req = ApprovalStore().request(tool="promote_model", agent="devops", env="dev", args={"model_version": "v-b"},
                                  reason="test", policies=["p"], requested_by="test")
    pending = client.get(f"{API}/approvals?status=pending").json()["approvals"]
    assert [p["id"] for p in pending] == [req.id]
    assert client.post(f"{API}/approvals/{req.id}/approve", json={"note": "ok"}, headers=AUTH).json()["status"] == \
        "approved"
    assert client.post(f"{API}/approvals/nope/deny", headers=AUTH).status_code == 404


def test_history_limit_is_validated(client: TestClient) -> None:
    assert client.get(f"{API}/history?limit=0").status_code == 422
    assert client.get(f"{API}/cycles/si_2000_01_01_001").status_code == 404
    t0 = time.time()
    assert client.get(f"{API}/history?limit=5").status_code == 200 and time.time() - t0 < 5


# -- found by tests/reliability/test_api_fuzz.py and test_api_load.py ------------------------------------------------
@pytest.mark.parametrize("path", CHANGES)
def test_token_is_checked_before_the_body(client: TestClient, path: str) -> None:
    """A malformed body used to get 422 from the parser before the token was looked at."""
    bad = {"content": b"{not json", "headers": {"Content-Type": "application/json"}}
    assert client.post(path, **bad).status_code == 401
    assert client.post(path, **{**bad, "headers": {**bad["headers"], "Authorization": "Bearer wrong"}}).status_code \
        == 403
    assert client.post(path, **{**bad, "headers": {**bad["headers"], **AUTH}}).status_code == 422


def test_a_lone_surrogate_is_a_422_not_a_500(client: TestClient) -> None:
    """FastAPI's 422 echoed the input and failed to encode "\\ud800" (UnicodeEncodeError -> 500)."""
    for path, field in [(f"{API}/kill-switch/on", "reason"), (f"{API}/approvals/x/approve", "note"),
                        (f"{API}/trigger", "challenger")]:
        r = client.post(path, content=b'{"%s": "\\ud800x"}' % field.encode(),
                        headers={**AUTH, "Content-Type": "application/json"})
        assert r.status_code == 422, (path, r.text)
        assert r.json()["detail"][0]["loc"] == ["body", field]
    assert client.get(f"{API}/kill-switch").json()["on"] is False  # the refused flip changed nothing


def test_second_decision_of_a_request_is_a_409(client: TestClient) -> None:
    from autooptimizer.policies.approvals import ApprovalStore
    from autooptimizer.policies.audit import AuditLog

    req = ApprovalStore().request(tool="scale_service", agent="devops", env="dev", args={"replicas": 2},
                                  reason="test", policies=["p"], requested_by="test")
    assert client.post(f"{API}/approvals/{req.id}/deny", headers=AUTH).json()["status"] == "denied"
    again = client.post(f"{API}/approvals/{req.id}/approve", headers=AUTH)
    assert again.status_code == 409 and "is denied" in again.json()["detail"]["problem"]
    assert ApprovalStore().get(req.id).status == "denied"
    decisions = [r["kind"] for r in AuditLog().records() if r.get("approval_id") == req.id]
    assert decisions == ["approval_requested", "approval_denied"]


def test_openapi_documents_every_answer(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for path in CHANGES:
        op = paths[path.replace("/x/", "/{request_id}/")]["post"]
        assert op["security"] == [{"HTTPBearer": []}]
        assert {"400", "401", "403", "422"} <= set(op["responses"])
        assert not any(p["name"].lower() == "authorization" for p in op.get("parameters", []))
    assert "409" in paths[f"{API}/trigger"]["post"]["responses"]
    assert {"404", "409"} <= set(paths[f"{API}/approvals/{{request_id}}/approve"]["post"]["responses"])
    assert "404" in paths[f"{API}/cycles/{{cycle_id}}"]["get"]["responses"]
    assert "text/plain" in paths[f"{API}/metrics"]["get"]["responses"]["200"]["content"]
    assert "security" not in paths[f"{API}/status"]["get"]


# -- who may read (api/access.py) -------------------------------------------------------------------------------------
READS = [f"{API}/status", f"{API}/history", f"{API}/metrics", f"{API}/approvals", f"{API}/kill-switch",
         f"{API}/cycles/si_2000_01_01_001"]


@pytest.mark.parametrize("path", READS)
def test_reads_from_elsewhere_need_the_token(client: TestClient, path: str) -> None:
    """Approval evidence, history and traces are not for anyone who can reach the port: a client that is not
    loopback (nor in AUTOOPT_READ_NETWORKS) gets the change endpoints' 401/403 and nothing else."""
    remote = TestClient(client.app, client=("203.0.113.7", 40000))
    r = remote.get(path)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert "loopback" in r.json()["detail"] and "approvals" not in r.text
    assert remote.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert remote.get(path, headers=AUTH).status_code in (200, 404)  # the token reads (404: no such cycle)
    assert client.get(path).status_code in (200, 404)  # loopback reads without it


def test_read_networks_open_reads_to_a_network(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOOPT_READ_NETWORKS", "10.0.0.0/8, 2001:db8::/32")
    get_settings.cache_clear()
    app = create_app(start_scheduler=False)
    assert TestClient(app, client=("10.1.2.3", 1)).get(f"{API}/status").status_code == 200
    assert TestClient(app, client=("2001:db8::5", 1)).get(f"{API}/status").status_code == 200
    assert TestClient(app, client=("11.0.0.1", 1)).get(f"{API}/status").status_code == 401
    # a write still needs the token from an open network
    assert TestClient(app, client=("10.1.2.3", 1)).post(f"{API}/kill-switch/on").status_code == 401


def test_a_bad_read_network_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from autooptimizer.errors import ConfigError
    from autooptimizer.settings import load_settings

    monkeypatch.setenv("AUTOOPT_READ_NETWORKS", "10.0.0.0/8,office")
    with pytest.raises(ConfigError, match="AUTOOPT_READ_NETWORKS") as err:
        load_settings()
    assert "'office' is not a network in CIDR form" in str(err.value)


def test_openapi_documents_the_read_refusals(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in READS:
        op = paths[path.replace("si_2000_01_01_001", "{cycle_id}")]["get"]
        assert {"401", "403"} <= set(op["responses"]), path
    assert not [p for p in paths if p.startswith("/ui")]  # the console is HTML for browsers, not API


def test_health_is_open_and_reveals_nothing(client: TestClient) -> None:
    """The Helm chart's readiness probe comes from the node, not loopback: it needs an answer without the token."""
    remote = TestClient(client.app, client=("10.244.0.1", 40000))
    r = remote.get(f"{API}/health")
    assert r.status_code == 200 and r.json() == {"ok": True}
    assert "security" not in client.get("/openapi.json").json()["paths"][f"{API}/health"]["get"]
