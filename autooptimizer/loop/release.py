"""Deploys as one journaled unit: commit the patch (GitOps) + apply it (deployer), or neither.

`Release.deploy` records the cycle's safe point (the patch and revision serving before the cycle's first change),
commits, applies, and on a failed apply reverts the commit and re-applies the previous patch (the compensating
action). `Release.restore` puts git and the target back to a cycle's safe point; crash recovery uses it too.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel, Field

from autooptimizer.errors import AutoOptError
from autooptimizer.loop.checkpoints import checkpoint
from autooptimizer.loop.deployer import Deployer, DeployError, DeployState, get_deployer
from autooptimizer.loop.gitops import Commit, GitOpsRepo, HelmPatch
from autooptimizer.loop.journal import Journal
from autooptimizer.settings import Settings, get_settings

log = logging.getLogger(__name__)


class RollbackTarget(BaseModel):
    """The exact earlier state a rollback returns to, and which commits it undoes."""

    patch: HelmPatch
    revision: str | None = Field(description="the commit that deployed this state before (for ArgoCD's history)")
    undoes: list[str] = Field(default_factory=list[str])
    what: str


def check_versions_exist(patch: HelmPatch) -> None:
    """Refuse before anything is committed when a version the patch names is not stored (e.g. it was deleted)."""
    from autooptimizer.search import model_store

    for version in filter(None, (patch.model_version, patch.canary_version)):
        if not model_store.exists(version):
            raise DeployError(f"Model version {version!r} is not stored (deleted?), so it cannot be deployed; "
                              "nothing was changed.", "Restore the version, or roll back to a revision whose "
                              "versions exist (`autoopt history`, the GitOps log).")


class DeployResult(BaseModel):
    revision: str
    previous_revision: str | None
    patch: HelmPatch
    previous: HelmPatch
    state: DeployState


class Release:
    """GitOps repo + deployer + journal; the devops tools and the cycle deploy only through this."""

    def __init__(self, settings: Settings | None = None, *, env: str | None = None, deployer: Deployer | None = None,
                 journal: Journal | None = None) -> None:
        self.settings = settings or get_settings()
        self.git = GitOpsRepo(self.settings, env or self.settings.env)
        self.deployer = deployer or get_deployer(self.settings)
        self.journal = journal or Journal(self.settings)

    def current(self) -> tuple[HelmPatch, str]:
        """The desired state in git (adopting what the target serves as the first commit when git has none)."""
        patch = self.git.read_patch()
        if patch is None:
            st = self.deployer.state()
            if not st.stable:
                raise DeployError("Neither the GitOps repo nor the target names a serving model version.",
                                  "Start the search service with a champion (`autoopt bootstrap`).")
            patch = HelmPatch(model_version=st.stable, canary_version=st.canary if st.canary_weight > 0 else None,
                              canary_weight=st.canary_weight if st.canary else 0.0, replicas=st.replicas or 1,
                              rerank_depth=st.rerank_depth)
            self.git.commit_patch(patch, f"Adopt the serving state ({patch.model_version}) as the baseline")
        return patch, self.git.head()

    def deploy(self, patch: HelmPatch, message: str, cycle_id: str | None = None) -> DeployResult:
        """Commit `patch` and apply it as one unit: a failed apply reverts the commit and re-applies what served."""
        previous, prev_sha = self.current()
        check_versions_exist(patch)
        if cycle_id:
            self.journal.mark_dirty(cycle_id, previous.model_dump(), prev_sha)
        return self._commit_and_apply(patch, message, cycle_id=cycle_id, previous=previous, prev_sha=prev_sha)

    def _commit_and_apply(self, patch: HelmPatch, message: str, *, cycle_id: str | None, previous: HelmPatch,
                          prev_sha: str, undoes: list[str] | None = None,
                          good_revision: str | None = None) -> DeployResult:
        unit = "deploy" if good_revision is None else "rollback"
        sha = self.git.commit_patch(patch, message, cycle_id=cycle_id, undoes=undoes)
        checkpoint(f"{unit}:after_commit")
        try:
            if good_revision is None:
                state = self.deployer.apply(patch, sha)
            else:
                state = self.deployer.rollback(patch, sha, good_revision=good_revision)
            checkpoint(f"{unit}:after_apply")
            self._verify(patch, state)
        except AutoOptError as exc:
            log.warning("apply of %s failed (%s); reverting the commit and restoring %s", sha[:12], exc.problem,
                        previous.model_version)
            if sha != prev_sha:
                revert_sha = self.git.revert(sha, f"apply failed: {exc.problem}", cycle_id=cycle_id)
                self._apply_quietly(previous, revert_sha, prev_sha)
            raise
        return DeployResult(revision=sha, previous_revision=prev_sha, patch=patch, previous=previous, state=state)

    def _verify(self, patch: HelmPatch, state: DeployState) -> None:
        """After an apply, what the target reports must be exactly git's desired state."""
        if not state.matches(patch):
            raise DeployError(f"After applying, the target serves {state.model_dump(exclude_none=True)}, not git's "
                              f"desired state {patch.model_dump()}.", "Check the search service (or ArgoCD) log.")

    def rollback_target(self, revision: str) -> RollbackTarget:
        """What rolling back `revision` restores: the safe point of the cycle that made it (every field: stable,
        canary, weight, replicas, variant), or for a commit made outside a cycle, the state just before it."""
        sha = self.git.resolve(revision)
        commits = self.git.log(limit=500)
        commit = next((c for c in commits if c.sha == sha), None)
        if sha is None or commit is None:
            raise DeployError(f"Revision {revision[:12]} is not a deployment of {self.git.env} in the GitOps "
                              "repository.", "Name a commit from `git log` of the GitOps repository, or omit the "
                              "revision to roll back the latest deployment.")
        if commit.cycle_id:
            return self._cycle_target(commit.cycle_id, commits)
        before = self.git.parent(sha)
        patch = self.git.read_patch(before) if before else None
        if patch is None:
            raise DeployError(f"There is nothing to roll back to: {sha[:12]} is the first deployment of "
                              f"{self.git.env}.", "Nothing was changed. Deploy a known-good version instead.")
        return RollbackTarget(patch=patch, revision=before or sha, undoes=[sha],
                              what=f"the state before {sha[:12]}")

    def _cycle_target(self, cycle_id: str, commits: list[Commit]) -> RollbackTarget:
        mine = [c for c in commits if c.cycle_id == cycle_id]
        undone = {s for c in commits for s in c.reverted}
        todo = [c.sha for c in mine if not c.reverted and c.sha not in undone]
        rec = self.journal.find(cycle_id)
        if rec is not None and rec.safe_patch:
            return RollbackTarget(patch=HelmPatch.model_validate(rec.safe_patch), revision=rec.safe_sha,
                                  undoes=todo, what=f"cycle {cycle_id}'s safe point")
        first = mine[-1].sha if mine else None
        before = self.git.parent(first) if first else None
        patch = self.git.read_patch(before) if before else None
        if patch is None:
            raise DeployError(f"There is nothing to roll back to: cycle {cycle_id} has no deployment before it in "
                              f"{self.git.env}.", "Nothing was changed. Deploy a known-good version instead.")
        return RollbackTarget(patch=patch, revision=before, undoes=todo, what=f"cycle {cycle_id}'s safe point")

    def rollback(self, bad_revision: str, reason: str, cycle_id: str | None = None) -> DeployResult:
        """Restore the exact state before `bad_revision` (or before its whole cycle) as one unit: check the target's
        versions exist, commit it, apply it, verify the target equals git, and move `champion` back if it named
        the version removed. A failed apply is undone: git and the target return to what served before."""
        return self._restore_target(self.rollback_target(bad_revision), reason, cycle_id)

    def latest_deployment(self) -> str:
        """The env's newest deploy commit; a clear error when the env has never been deployed."""
        commits = self.git.log(limit=1)
        if not commits:
            raise DeployError(f"There is nothing to roll back to: {self.git.env} has no deployment in the GitOps "
                              "repository yet.", "Nothing was changed. Deploy a model first (`autoopt demo`, "
                              "`autoopt trigger`).")
        return commits[0].sha

    def rollback_cycle(self, cycle_id: str, reason: str) -> DeployResult:
        """Restore `cycle_id`'s safe point (see `rollback`)."""
        return self._restore_target(self._cycle_target(cycle_id, self.git.log(limit=500)), reason, cycle_id)

    def _restore_target(self, target: RollbackTarget, reason: str, cycle_id: str | None) -> DeployResult:
        check_versions_exist(target.patch)
        current, cur_sha = self.current()
        if cycle_id:  # a crash from here on must be recovered like any other deployment change of the cycle
            self.journal.mark_dirty(cycle_id, current.model_dump(), cur_sha)
        message = f"Roll back to {target.what} ({target.patch.model_version}): {reason}"
        res = self._commit_and_apply(target.patch, message, cycle_id=cycle_id, previous=current, prev_sha=cur_sha,
                                     undoes=target.undoes, good_revision=target.revision)
        self._align_champion(removed=current, restored=target.patch)
        return res

    def _align_champion(self, *, removed: HelmPatch, restored: HelmPatch) -> None:
        """The registry's `champion` follows what serves: if it named the stable version a rollback removed, it
        moves to the restored one (aliases.json, mirrored into MLflow)."""
        from autooptimizer.search import aliases

        if removed.model_version == restored.model_version:
            return
        if aliases.get_alias(aliases.CHAMPION) != removed.model_version:
            return
        aliases.set_alias(aliases.CHAMPION, restored.model_version)  # the source of truth, written first
        try:
            from autooptimizer.ml.model_registry import set_alias

            set_alias(aliases.CHAMPION, restored.model_version)
        except Exception as exc:  # noqa: BLE001 - the MLflow mirror lags; aliases.json already agrees with git
            log.error("champion moved to %s in aliases.json, but the MLflow mirror failed: %s",
                      restored.model_version, exc)

    def restore(self, cycle_id: str, reason: str) -> dict[str, Any]:
        """Undo every deployment change of `cycle_id`: revert its commits, re-apply the safe point. Idempotent."""
        rec = self.journal.get(cycle_id, with_steps=False)
        if not rec.deploy_dirty:
            return {"restored": False, "why": "the cycle changed nothing deployed"}
        reverts = self.git.revert_cycle(cycle_id, reason)
        safe = HelmPatch.model_validate(rec.safe_patch) if rec.safe_patch else self.git.read_patch()
        head = self.git.head()
        desired = self.git.read_patch() or safe
        if safe is not None and desired != safe:
            # someone else committed after the cycle: git keeps their change; the target follows git
            log.warning("git HEAD differs from cycle %s's safe point; applying HEAD", cycle_id)
        state = self.deployer.rollback(desired, head, good_revision=rec.safe_sha) if desired else None
        self.journal.mark_clean(cycle_id)
        return {"restored": True, "reverted_commits": reverts, "revision": head,
                "state": state.model_dump() if state else None}

    def consistent(self) -> tuple[bool, HelmPatch | None, DeployState]:
        """Does the target serve what git says? (the post-crash invariant)"""
        patch = self.git.read_patch()
        state = self.deployer.state()
        return (patch is not None and state.matches(patch)), patch, state

    def _apply_quietly(self, patch: HelmPatch, revision: str, good_revision: str | None) -> None:
        try:
            self.deployer.rollback(patch, revision, good_revision=good_revision)
        except AutoOptError as exc:
            log.error("restoring %s also failed: %s", patch.model_version, exc.problem)
