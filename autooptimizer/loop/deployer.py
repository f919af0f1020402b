"""Apply a committed Helm patch to what actually serves traffic.

- `LocalDeployer` (the embedded default): the local search service's admin endpoints — `POST /admin/models`
  {stable, canary, canary_weight} (the service warms the new pipelines, then swaps atomically), `POST /admin/replicas`
  {replicas}, `POST /admin/variant` {rerank_depth}; `GET /admin/state` confirms what serves.
- `ArgoCDDeployer`, when AUTOOPT_ARGOCD_URL is set: sync the application to the commit and wait until it is Healthy;
  a rollback redeploys the known-good revision by its `status.history` id.
"""

from __future__ import annotations

from typing import Any, Protocol, cast

import httpx
from pydantic import BaseModel

from autooptimizer.errors import AutoOptError
from autooptimizer.loop.argocd import ArgoCDClient, ArgoCDError
from autooptimizer.loop.gitops import HelmPatch
from autooptimizer.settings import Settings


class DeployError(AutoOptError):
    """The target refused or could not be reached; nothing is assumed deployed."""


class DeployState(BaseModel):
    """What the target reports serving."""

    stable: str | None = None
    canary: str | None = None
    canary_weight: float = 0.0
    replicas: int | None = None
    rerank_depth: int | None = None
    revision: str | None = None

    def matches(self, patch: HelmPatch) -> bool:
        """True when the target serves exactly what the patch asks for (the consistency check after a crash)."""
        want_canary = patch.canary_version if patch.canary_weight > 0 else None
        have_canary = self.canary if self.canary_weight > 0 else None
        return (
            self.stable == patch.model_version
            and have_canary == want_canary
            and (want_canary is None or abs(self.canary_weight - patch.canary_weight) < 1e-9)
            and self.replicas == patch.replicas
            and self.rerank_depth == patch.rerank_depth
        )


class Deployer(Protocol):
    kind: str

    def apply(self, patch: HelmPatch, revision: str) -> DeployState:
        """Make the target serve `patch` (committed as `revision`); returns the confirmed state."""
        ...

    def rollback(self, patch: HelmPatch, revision: str, good_revision: str | None = None) -> DeployState:
        """Return the target to a known-good `patch`; `good_revision` is the commit that deployed it before."""
        ...

    def state(self) -> DeployState: ...


class LocalDeployer:
    """Drives the local search service through its admin API."""

    kind = "local"

    def __init__(self, base_url: str, timeout: float = 600.0, token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # Warming a new model version (encoding its document cache) can take minutes on this CPU.
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, headers=headers)

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            resp = self._http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise DeployError(f"The search service at {self.base_url} is unreachable ({exc}).",
                              "Start it (`autoopt search serve` / `autoopt demo`) or set AUTOOPT_SEARCH_PORT.") from exc
        if resp.status_code >= 400:
            try:
                detail = resp.json().get("detail", resp.text)
            except ValueError:
                detail = resp.text
            raise DeployError(f"The search service refused {method} {path}: {resp.status_code} {detail}",
                              "Check that the model version exists under AUTOOPT_HOME/models.")
        return resp.json() if resp.content else {}

    def state(self) -> DeployState:
        return parse_admin_state(self._call("GET", "/admin/state"))

    def apply(self, patch: HelmPatch, revision: str) -> DeployState:
        current = self.state()
        if current.replicas != patch.replicas:
            self._call("POST", "/admin/replicas", {"replicas": patch.replicas})
        if current.rerank_depth != patch.rerank_depth:
            self._call("POST", "/admin/variant", {"rerank_depth": patch.rerank_depth})
        canary = patch.canary_version if patch.canary_version and patch.canary_weight > 0 else None
        same_models = current.model_copy(update={"replicas": patch.replicas, "rerank_depth": patch.rerank_depth})
        if not same_models.matches(patch):
            self._call("POST", "/admin/models", {"stable": patch.model_version, "canary": canary,
                                                 "canary_weight": patch.canary_weight if canary else 0.0})
        state = self.state().model_copy(update={"revision": revision})
        if not state.matches(patch):
            raise DeployError(f"After applying {revision[:12]} the service serves {state.model_dump()}, "
                              f"not {patch.model_dump()}.", "Check the search service log.")
        return state

    def rollback(self, patch: HelmPatch, revision: str, good_revision: str | None = None) -> DeployState:
        return self.apply(patch, revision)

    def restart(self) -> DeployState:
        """Re-assert the current versions (the service rebuilds what is not warm, then swaps atomically)."""
        st = self.state()
        self._call("POST", "/admin/models", {"stable": st.stable, "canary": st.canary,
                                             "canary_weight": st.canary_weight if st.canary else 0.0})
        return self.state()


def parse_admin_state(data: dict[str, Any]) -> DeployState:
    """Read the search service's `GET /admin/state` answer."""
    depth = data.get("rerank_depth_override", data.get("rerank_depth"))
    return DeployState(
        stable=_version(data.get("stable")),
        canary=_version(data.get("canary")),
        canary_weight=float(data.get("canary_weight") or 0.0),
        replicas=data.get("replicas"),
        rerank_depth=depth,
    )


def _version(ref: Any) -> Any:
    """A model version as the service reports it: the version itself, or {"version"|"model_version": ...}."""
    if isinstance(ref, dict):
        obj = cast("dict[str, Any]", ref)
        return obj.get("version") or obj.get("model_version")
    return ref


class ArgoCDDeployer:
    """GitOps through ArgoCD: sync to the commit; roll back by history id."""

    kind = "argocd"

    def __init__(self, client: ArgoCDClient, app: str, wait_timeout: float = 300.0, interval: float = 1.0) -> None:
        self.client, self.app, self.wait_timeout, self.interval = client, app, wait_timeout, interval
        self._last: HelmPatch | None = None

    def apply(self, patch: HelmPatch, revision: str) -> DeployState:
        self.client.sync(self.app, revision)
        st = self.client.wait(self.app, revision=revision, timeout=self.wait_timeout, interval=self.interval)
        self._last = patch
        return _state_of(patch, st.sync_revision)

    def rollback(self, patch: HelmPatch, revision: str, good_revision: str | None = None) -> DeployState:
        try:
            if good_revision is None:
                raise ArgoCDError("no known-good revision")
            hid = self.client.history_id_for(self.app, good_revision)
        except ArgoCDError:
            return self.apply(patch, revision)  # never deployed before: sync the revert commit instead
        self.client.rollback(self.app, hid)
        st = self.client.wait(self.app, revision=good_revision, timeout=self.wait_timeout, interval=self.interval)
        self._last = patch
        return _state_of(patch, st.sync_revision)

    def state(self) -> DeployState:
        st = self.client.status(self.app)
        return DeployState(revision=st.sync_revision) if self._last is None else _state_of(self._last,
                                                                                            st.sync_revision)


def _state_of(patch: HelmPatch, revision: str | None) -> DeployState:
    return DeployState(stable=patch.model_version, canary=patch.canary_version,
                       canary_weight=patch.canary_weight if patch.canary_version else 0.0, replicas=patch.replicas,
                       rerank_depth=patch.rerank_depth, revision=revision)


def get_deployer(settings: Settings) -> Deployer:
    """ArgoCD when AUTOOPT_ARGOCD_URL is set, else the local search service."""
    if settings.argocd_url:
        import os

        client = ArgoCDClient(settings.argocd_url, token=settings.argocd_token,
                              username=os.environ.get("AUTOOPT_ARGOCD_USERNAME"),
                              password=os.environ.get("AUTOOPT_ARGOCD_PASSWORD"))
        return ArgoCDDeployer(client, settings.argocd_app)
    return LocalDeployer(settings.search_url, token=settings.api_token)
