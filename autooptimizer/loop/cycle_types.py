"""The types a cycle is made of: its options, its typed state (the journal summary and summary.json), the stop that
ends it early, and the small interfaces of what it acts through (release, registry, sample source)."""

from __future__ import annotations

import json
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from autooptimizer.errors import AutoOptError
from autooptimizer.loop.deployer import DeployState
from autooptimizer.loop.gitops import Commit, HelmPatch
from autooptimizer.loop.journal import CycleStatus
from autooptimizer.loop.remedies import FiredGate, Gate
from autooptimizer.tools.spec import ToolCallResult


class CycleOptions(BaseModel):
    """How to run one cycle. `gate` forces the path (an operator's on-demand action, or mock signals in dev)."""

    trigger: str = "manual"
    gate: Gate | None = None
    challenger: str | None = Field(default=None, description="an existing model version to A/B instead of training one")
    domain_data: str | None = Field(default=None, description="the shifted domain's BEIR folder/name for retraining "
                                    "(default: the dataset most recent feedback comes from)")
    original: str = Field(default="scifact", description="the original domain: its `test` split guards promotion")
    ab_min_samples: int | None = Field(default=None, ge=2)
    ab_max_duration_seconds: float | None = Field(default=None, gt=0)
    watch_seconds: float | None = Field(default=None, gt=0)
    seed: int = 0
    act_on: list[FiredGate] | None = Field(default=None, description="firing gates that may start a path (the "
                                           "scheduler passes those confirmed on gates.consecutiveReadings readings); "
                                           "None = any firing gate")


class Decision(BaseModel):
    """One gated tool call of the cycle, as the summary lists it."""

    agent: str
    tool: str
    decision: str
    policies: list[str]
    executed: bool
    approval_id: str | None = None


class CycleState(BaseModel):
    """What a cycle learned and did. Only the fields a path set are written (`summary()`): the journal's summary
    and summary.json's `details` hold exactly those, as JSON."""

    model_config = ConfigDict(extra="forbid")

    options: CycleOptions
    decisions: list[Decision] = Field(default_factory=lambda: list[Decision]())
    gates: dict[str, str] | None = None
    gate: Gate | None = None
    # an approved promotion (staging's autoPromote: false)
    approval_id: str | None = None
    approved_by: str | None = None
    requested_in: str | None = None
    # retrain and release
    champion: str | None = None
    challenger: str | None = None
    domain: str | None = None
    diagnosis: dict[str, Any] | None = None
    mlflow: dict[str, Any] | None = None
    offline: dict[str, Any] | None = None
    forgetting: dict[str, Any] | None = Field(default=None, description="the forgetting guard's per-set table "
                                              "(ml/forgetting.py), as evaluation.json's `forgetting`")
    best_raised: dict[str, float] | None = None
    ab_started_ts: float | None = None
    ab_verdict: str | None = None
    promotion: str | None = None
    promoted_revision: str | None = None
    # watch (deploy_watch: the commits compared)
    watched_revision: str | None = None
    new: str | None = None
    old: str | None = None
    watch: dict[str, Any] | None = None
    rollback: dict[str, Any] | None = None
    champion_alias: dict[str, Any] | None = None
    # latency and cost remedies
    action: dict[str, Any] | None = None
    # the end
    retention: dict[str, Any] | None = Field(default=None, description="prune_storage at the cycle's end "
                                             "(retention.afterEachCycle): decision and what was deleted")
    restore: dict[str, Any] | None = None
    traceback: str | None = None
    outcome: str | None = None
    reason: str | None = None
    duration_seconds: float | None = None

    def summary(self) -> dict[str, Any]:
        """The options, the decisions and every field set so far, as JSON values (what the journal stores)."""
        data = self.model_dump(mode="json", include=self.model_fields_set | {"options", "decisions"})
        return json.loads(json.dumps(data, default=str))


class CycleStop(Exception):
    """Ends a cycle early with an outcome (not an error: a denial, a failed A/B, nothing to do...)."""

    def __init__(self, outcome: str, reason: str, *, restore: bool = True, status: CycleStatus = "finished") -> None:
        super().__init__(reason)
        self.outcome: str = outcome
        self.reason: str = reason
        self.restore: bool = restore
        self.status: CycleStatus = status


class StepFailed(AutoOptError):
    """A tool ran and reported an error."""


class GitView(Protocol):
    """The GitOps repository as the cycle reads it."""

    def head(self) -> str: ...
    def read_patch(self, rev: str = "HEAD", *, sync: bool = True) -> HelmPatch | None: ...
    def parent(self, rev: str) -> str | None: ...
    def commit_time(self, rev: str = "HEAD") -> float: ...
    def log(self, limit: int = 20, *, sync: bool = True) -> list[Commit]: ...


@runtime_checkable
class Restartable(Protocol):
    """A deployer that can rebuild the serving pipelines (the local one)."""

    def restart(self) -> DeployState: ...


class ReleasePort(Protocol):
    """What the cycle calls on loop/release.py's Release (the devops tools deploy through the same object)."""

    @property
    def git(self) -> GitView: ...
    @property
    def deployer(self) -> object: ...
    def current(self) -> tuple[HelmPatch, str]: ...
    def restore(self, cycle_id: str, reason: str) -> dict[str, Any]: ...


class RegistryPort(Protocol):
    """What the cycle calls on tools/registry.py's ToolRegistry: the gated call."""

    def call(self, agent: str, name: str, args: dict[str, Any] | None, *, env: str | None = None,
             trace_id: str | None = None, approval_id: str | None = None, requested_by: str = "agent",
             evidence: dict[str, Any] | None = None, cycle_id: str | None = None,
             scope: frozenset[str] | None = None, sample_source: Any = None, release: Any = None
             ) -> ToolCallResult: ...


__all__ = ["CycleOptions", "CycleState", "CycleStop", "Decision", "GitView", "RegistryPort", "ReleasePort",
           "Restartable", "StepFailed"]
