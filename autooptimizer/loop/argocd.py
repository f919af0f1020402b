"""A client for ArgoCD's REST API (the documented `/api/v1` endpoints), used when AUTOOPT_ARGOCD_URL is set.

- `POST /api/v1/session` {username, password} -> {token} (or a pre-issued token: AUTOOPT_ARGOCD_TOKEN);
- `GET /api/v1/applications/{name}` -> the Application (status.sync, status.health, status.history, operationState);
- `POST /api/v1/applications/{name}/sync` {revision, prune, dryRun};
- `POST /api/v1/applications/{name}/rollback` {id, prune, dryRun}: redeploy a `status.history` entry.

Errors come back as ArgoCD's `{"error", "code", "message"}` body and are raised as ArgoCDError with that message.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from autooptimizer.errors import AutoOptError


class ArgoCDError(AutoOptError):
    """ArgoCD answered with an error, or an operation did not finish in time."""


class HistoryEntry(BaseModel):
    """One `status.history[]` record (RevisionHistory)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    id: int
    revision: str = ""
    deployed_at: str | None = Field(default=None, alias="deployedAt")


class AppStatus(BaseModel):
    """The parts of an Application the loop reads."""

    name: str
    sync_status: str | None = None
    sync_revision: str | None = None
    health: str | None = None
    operation_phase: str | None = None
    operation_message: str | None = None
    history: list[HistoryEntry] = Field(default_factory=list[HistoryEntry])

    @classmethod
    def from_app(cls, app: dict[str, Any]) -> AppStatus:
        status = _section(app, "status")
        sync = _section(status, "sync")
        op = _section(status, "operationState")
        history: list[Any] = status.get("history") or []
        return cls(
            name=_section(app, "metadata").get("name", ""),
            sync_status=sync.get("status"),
            sync_revision=sync.get("revision"),
            health=_section(status, "health").get("status"),
            operation_phase=op.get("phase"),
            operation_message=op.get("message"),
            history=[HistoryEntry.model_validate(h) for h in history],
        )


def _section(obj: dict[str, Any], key: str) -> dict[str, Any]:
    """`obj[key]`, an object of the Application JSON, or {} where ArgoCD left it out or sent null."""
    section: dict[str, Any] = obj.get(key) or {}
    return section


class ArgoCDClient:
    """Synchronous client; one instance per ArgoCD server. `token` or `username`/`password` authenticates."""

    def __init__(self, base_url: str, *, token: str | None = None, username: str | None = None,
                 password: str | None = None, timeout: float = 15.0, verify: bool = True) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._username, self._password = username, password
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, verify=verify)

    def close(self) -> None:
        self._http.close()

    # -- auth -----------------------------------------------------------------------------------------------------
    def login(self) -> str:
        if not (self._username and self._password):
            raise ArgoCDError("No ArgoCD token and no username/password to create a session.",
                              "Set AUTOOPT_ARGOCD_TOKEN (an API token) for the ArgoCD account.")
        data = self._send("POST", "/api/v1/session", json={"username": self._username, "password": self._password},
                          auth=False)
        self._token = data["token"]
        return self._token

    def _send(self, method: str, path: str, *, json: dict[str, Any] | None = None, auth: bool = True,
              retry_auth: bool = True) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        if auth:
            if not self._token:
                self.login()
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            resp = self._http.request(method, path, json=json, headers=headers)
        except httpx.HTTPError as exc:
            raise ArgoCDError(f"ArgoCD at {self.base_url} is unreachable: {exc}",
                              "Check AUTOOPT_ARGOCD_URL and the network path to the ArgoCD server.") from exc
        if resp.status_code == 401 and auth and retry_auth and self._username:
            self._token = None  # session expired: log in again once
            return self._send(method, path, json=json, auth=auth, retry_auth=False)
        if resp.status_code >= 400:
            try:
                body = resp.json()
                message = body.get("message") or body.get("error") or resp.text
            except ValueError:
                message = resp.text
            raise ArgoCDError(f"ArgoCD {method} {path} answered {resp.status_code}: {message}",
                              "Check the application name, the token's RBAC and the revision.")
        return resp.json() if resp.content else {}

    # -- applications ---------------------------------------------------------------------------------------------
    def get_application(self, name: str) -> dict[str, Any]:
        return self._send("GET", f"/api/v1/applications/{name}")

    def status(self, name: str) -> AppStatus:
        return AppStatus.from_app(self.get_application(name))

    def history(self, name: str) -> list[HistoryEntry]:
        return self.status(name).history

    def sync(self, name: str, revision: str | None = None, *, prune: bool = False, dry_run: bool = False) -> AppStatus:
        body: dict[str, Any] = {"name": name, "prune": prune, "dryRun": dry_run}
        if revision:
            body["revision"] = revision
        return AppStatus.from_app(self._send("POST", f"/api/v1/applications/{name}/sync", json=body))

    def rollback(self, name: str, history_id: int, *, prune: bool = False, dry_run: bool = False) -> AppStatus:
        # ArgoCD's RollbackRequest carries `id` as an int64, which its JSON gateway accepts as a string.
        body = {"name": name, "id": str(history_id), "prune": prune, "dryRun": dry_run}
        return AppStatus.from_app(self._send("POST", f"/api/v1/applications/{name}/rollback", json=body))

    def wait(self, name: str, *, revision: str | None = None, timeout: float = 300.0,
             interval: float = 1.0) -> AppStatus:
        """Poll until the last operation succeeded and the app is Healthy (at `revision` when given)."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.status(name)
            if st.operation_phase in ("Failed", "Error"):
                raise ArgoCDError(f"ArgoCD operation on {name} ended {st.operation_phase}: {st.operation_message}",
                                  "Inspect the application in ArgoCD; the loop will not retry a failed sync.")
            at_rev = revision is None or st.sync_revision == revision
            if st.operation_phase in (None, "Succeeded") and st.health == "Healthy" and at_rev:
                return st
            if time.monotonic() >= deadline:
                raise ArgoCDError(f"ArgoCD application {name} not healthy at {revision or 'target'} after "
                                  f"{timeout:.0f} s (phase {st.operation_phase}, health {st.health}).",
                                  "Inspect the application in ArgoCD.")
            time.sleep(interval)

    def history_id_for(self, name: str, revision: str) -> int:
        """The newest history id that deployed `revision`."""
        for entry in sorted(self.history(name), key=lambda h: h.id, reverse=True):
            if entry.revision == revision:
                return entry.id
        raise ArgoCDError(f"Revision {revision[:12]} is not in {name}'s deployment history.",
                          "Roll back to a revision ArgoCD has deployed (see status.history).")
