"""Contract test: the ArgoCD client and deployer against a local fake ArgoCD server over real HTTP.

The fake implements the documented endpoints and their shapes (session, application get/sync/rollback,
status.history, operationState, ArgoCD's `{"error","code","message"}` errors) and deploys what the real git
repository holds at the requested revision, so the test also proves the GitOps commit is what gets deployed.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import uvicorn
import yaml
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from autooptimizer.loop.argocd import ArgoCDClient, ArgoCDError
from autooptimizer.loop.deployer import ArgoCDDeployer, get_deployer
from autooptimizer.loop.gitops import GitOpsRepo, HelmPatch
from autooptimizer.settings import get_settings

USER, PASSWORD = "admin", "s3cret"


def _err(status: int, code: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "code": code, "message": message}, status_code=status)


class FakeArgoCD:
    """Holds one Application whose source is a git repo; operations finish after `op_seconds`."""

    def __init__(self, repo_dir: str, path: str, app: str = "search-reranker", op_seconds: float = 0.2) -> None:
        self.repo_dir, self.path, self.app_name, self.op_seconds = repo_dir, path, app, op_seconds
        self.tokens: set[str] = set()
        self.history: list[dict[str, Any]] = []
        self.revision: str | None = None
        self.deployed_values: dict[str, Any] | None = None
        self.op: dict[str, Any] | None = None
        self.auto_sync = False
        self.requests: list[tuple[str, str, dict[str, Any] | None]] = []
        self.app = FastAPI()
        self._routes()

    def _resolve(self, revision: str) -> tuple[str, dict[str, Any]] | None:
        sha = subprocess.run(["git", "--git-dir", self.repo_dir, "rev-parse", "--verify", f"{revision}^{{commit}}"],
                             capture_output=True, text=True)
        if sha.returncode != 0:
            return None
        text = subprocess.run(["git", "--git-dir", self.repo_dir, "show", f"{sha.stdout.strip()}:{self.path}"],
                              capture_output=True, text=True, check=True).stdout
        return sha.stdout.strip(), yaml.safe_load(text)

    def _deploy(self, sha: str, values: dict[str, Any], kind: str) -> None:
        self.op = {"phase": "Running", "message": f"{kind} in progress", "startedAt": _now(),
                   "operation": {kind: {"revision": sha}}, "_done_at": time.monotonic() + self.op_seconds,
                   "_sha": sha, "_values": values}

    def _tick(self) -> None:
        if self.op and self.op["phase"] == "Running" and time.monotonic() >= self.op["_done_at"]:
            self.op["phase"], self.op["message"], self.op["finishedAt"] = "Succeeded", "successfully synced", _now()
            self.revision, self.deployed_values = self.op["_sha"], self.op["_values"]
            self.history.append({"id": len(self.history), "revision": self.revision, "deployedAt": _now(),
                                 "deployStartedAt": self.op["startedAt"],
                                 "source": {"repoURL": self.repo_dir, "path": "deploy/helm/autooptimizer"}})

    def application(self) -> dict[str, Any]:
        self._tick()
        running = self.op is not None and self.op["phase"] == "Running"
        status: dict[str, Any] = {
            "sync": {"status": "Synced" if self.revision else "OutOfSync", "revision": self.revision},
            "health": {"status": "Progressing" if running or not self.revision else "Healthy"},
            "history": self.history,
        }
        if self.op:
            status["operationState"] = {k: v for k, v in self.op.items() if not k.startswith("_")}
        spec: dict[str, Any] = {"project": "default", "source": {"repoURL": self.repo_dir, "targetRevision": "main"}}
        if self.auto_sync:
            spec["syncPolicy"] = {"automated": {"prune": True}}
        return {"metadata": {"name": self.app_name, "namespace": "argocd"}, "spec": spec, "status": status}

    def _routes(self) -> None:
        app = self.app

        @app.middleware("http")
        async def auth(request: Request, call_next):  # type: ignore[no-untyped-def]
            body = await request.json() if request.method == "POST" else None
            self.requests.append((request.method, request.url.path, body))
            if request.url.path != "/api/v1/session":
                header = request.headers.get("authorization", "")
                if not header.startswith("Bearer ") or header[7:] not in self.tokens:
                    return _err(401, 16, "invalid session: token is missing or invalid")
            return await call_next(request)

        @app.post("/api/v1/session")
        async def session(request: Request) -> JSONResponse:
            body = await request.json()
            if body.get("username") != USER or body.get("password") != PASSWORD:
                return _err(401, 16, "Invalid username or password")
            token = f"tok-{len(self.tokens)}"
            self.tokens.add(token)
            return JSONResponse({"token": token})

        @app.get("/api/v1/applications/{name}")
        async def get_app(name: str) -> JSONResponse:
            if name != self.app_name:
                return _err(404, 5, f'applications.argoproj.io "{name}" not found')
            return JSONResponse(self.application())

        @app.post("/api/v1/applications/{name}/sync")
        async def sync(name: str, request: Request) -> JSONResponse:
            if name != self.app_name:
                return _err(404, 5, f'applications.argoproj.io "{name}" not found')
            body = await request.json()
            if self.op and self.op["phase"] == "Running":
                return _err(400, 9, "another operation is already in progress")
            resolved = self._resolve(body.get("revision") or "main")
            if resolved is None:
                return _err(400, 3, f"unable to resolve '{body.get('revision')}' to a commit SHA")
            if not body.get("dryRun"):
                self._deploy(*resolved, kind="sync")
            return JSONResponse(self.application())

        @app.post("/api/v1/applications/{name}/rollback")
        async def rollback(name: str, request: Request) -> JSONResponse:
            body = await request.json()
            if self.auto_sync:
                return _err(400, 9, "rollback cannot be initiated when auto-sync is enabled")
            hid = int(body["id"])
            entry = next((h for h in self.history if h["id"] == hid), None)
            if entry is None:
                return _err(400, 3, f"application {name} does not have deployment with id {hid}")
            resolved = self._resolve(entry["revision"])
            assert resolved is not None
            self._deploy(*resolved, kind="rollback")
            return JSONResponse(self.application())


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def gitops() -> GitOpsRepo:
    repo = GitOpsRepo(get_settings(), "dev")
    repo.ensure()
    return repo


@pytest.fixture()
def fake(gitops: GitOpsRepo) -> Iterator[tuple[FakeArgoCD, str]]:
    fake = FakeArgoCD(gitops.remote, gitops.rel_path)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(fake.app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield fake, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(5)


def test_session_login_and_application_read(fake: tuple[FakeArgoCD, str]) -> None:
    server, url = fake
    client = ArgoCDClient(url, username=USER, password=PASSWORD)
    st = client.status("search-reranker")
    assert st.name == "search-reranker" and st.sync_status == "OutOfSync" and st.history == []
    assert server.requests[0][:2] == ("POST", "/api/v1/session")
    assert server.requests[0][2] == {"username": USER, "password": PASSWORD}


def test_errors_carry_argocd_message(fake: tuple[FakeArgoCD, str]) -> None:
    _, url = fake
    with pytest.raises(ArgoCDError, match="Invalid username or password"):
        ArgoCDClient(url, username=USER, password="wrong").status("search-reranker")
    with pytest.raises(ArgoCDError, match="invalid session"):
        ArgoCDClient(url, token="forged").status("search-reranker")
    with pytest.raises(ArgoCDError, match="not found"):
        ArgoCDClient(url, username=USER, password=PASSWORD).status("nope")
    with pytest.raises(ArgoCDError, match="unreachable"):
        ArgoCDClient("http://127.0.0.1:9", token="t", timeout=1).status("x")


def test_sync_deploys_the_commit_and_rollback_uses_history_id(fake: tuple[FakeArgoCD, str],
                                                              gitops: GitOpsRepo) -> None:
    server, url = fake
    deployer = ArgoCDDeployer(ArgoCDClient(url, username=USER, password=PASSWORD), "search-reranker",
                              wait_timeout=10, interval=0.05)
    good = HelmPatch(model_version="m-1", replicas=2)
    good_sha = gitops.commit_patch(good, "deploy m-1", cycle_id="c1")
    st = deployer.apply(good, good_sha)
    assert st.revision == good_sha and server.deployed_values["search"]["modelVersion"] == "m-1"

    bad = HelmPatch(model_version="m-bad", replicas=2)
    bad_sha = gitops.commit_patch(bad, "promote m-bad", cycle_id="c2")
    deployer.apply(bad, bad_sha)
    assert server.deployed_values["search"]["modelVersion"] == "m-bad"
    assert [h["revision"] for h in server.application()["status"]["history"]] == [good_sha, bad_sha]

    revert_sha = gitops.revert(bad_sha, "degraded", cycle_id="c2")
    st = deployer.rollback(good, revert_sha, good_revision=good_sha)
    assert server.deployed_values["search"]["modelVersion"] == "m-1" and st.revision == good_sha
    rollback_calls = [b for m, p, b in server.requests if p.endswith("/rollback")]
    assert rollback_calls == [{"name": "search-reranker", "id": "0", "prune": False, "dryRun": False}]
    sync_calls = [b for m, p, b in server.requests if p.endswith("/sync")]
    assert [b["revision"] for b in sync_calls] == [good_sha, bad_sha]


def test_rollback_refused_under_auto_sync_is_an_error(fake: tuple[FakeArgoCD, str], gitops: GitOpsRepo) -> None:
    server, url = fake
    client = ArgoCDClient(url, username=USER, password=PASSWORD)
    sha = gitops.commit_patch(HelmPatch(model_version="m-1"), "deploy")
    client.sync("search-reranker", sha)
    client.wait("search-reranker", revision=sha, timeout=5, interval=0.05)
    server.auto_sync = True
    with pytest.raises(ArgoCDError, match="auto-sync"):
        client.rollback("search-reranker", 0)
    with pytest.raises(ArgoCDError, match="unable to resolve"):
        client.sync("search-reranker", "0" * 40)


def test_get_deployer_picks_argocd_when_url_set(monkeypatch: pytest.MonkeyPatch) -> None:
    assert get_deployer(get_settings()).kind == "local"
    monkeypatch.setenv("AUTOOPT_ARGOCD_URL", "http://127.0.0.1:1")
    get_settings.cache_clear()
    assert get_deployer(get_settings()).kind == "argocd"
