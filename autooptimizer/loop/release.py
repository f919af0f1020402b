"""Deploys as one journaled unit: commit the patch (GitOps) + apply it (deployer), or neither.

`Release.deploy` records the cycle's safe point (the patch and revision serving before the cycle's first change),
commits, applies, and on a failed apply reverts the commit and re-applies the previous patch (the compensating
action). `Release.restore` puts git and the target back to a cycle's safe point; crash recovery uses it too.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel

from autooptimizer.errors import AutoOptError
from autooptimizer.loop.deployer import Deployer, DeployError, DeployState, get_deployer
from autooptimizer.loop.gitops import GitOpsRepo, HelmPatch
from autooptimizer.loop.journal import Journal, crash_point
from autooptimizer.settings import Settings, get_settings

log = logging.getLogger(__name__)


class DeployResult(BaseModel):
    revision: str
    previous_revision: str | None
    patch: HelmPatch
    previous: HelmPatch
    state: DeployState


class Release:
    """GitOps repo + deployer + journal; the devops tools and the cycle deploy only through this."""

    def __init__(self, settings: Settings | None = None, *, deployer: Deployer | None = None,
                 journal: Journal | None = None) -> None:
        self.settings = settings or get_settings()
        self.git = GitOpsRepo(self.settings)
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
        previous, prev_sha = self.current()
        if cycle_id:
            self.journal.mark_dirty(cycle_id, previous.model_dump(), prev_sha)
        sha = self.git.commit_patch(patch, message, cycle_id=cycle_id)
        crash_point(self.settings, "after_commit")
        try:
            state = self.deployer.apply(patch, sha)
        except AutoOptError as exc:
            log.warning("apply of %s failed (%s); reverting the commit and restoring %s", sha[:12], exc.problem,
                        previous.model_version)
            if sha != prev_sha:
                revert_sha = self.git.revert(sha, f"apply failed: {exc.problem}", cycle_id=cycle_id)
                self._apply_quietly(previous, revert_sha, prev_sha)
            raise
        return DeployResult(revision=sha, previous_revision=prev_sha, patch=patch, previous=previous, state=state)

    def rollback(self, bad_revision: str, reason: str, cycle_id: str | None = None) -> DeployResult:
        """`git revert` the bad commit, then return the target to the patch before it."""
        bad_patch = self.git.read_patch(bad_revision)
        good_sha = self.git._git("rev-parse", f"{bad_revision}^")
        good = self.git.read_patch(good_sha)
        if good is None or bad_patch is None:
            raise DeployError(f"Revision {bad_revision[:12]} has no earlier patch to roll back to.",
                              "Roll back to an explicit revision instead.")
        revert_sha = self.git.revert(bad_revision, reason, cycle_id=cycle_id)
        now = self.git.read_patch() or good
        state = self.deployer.rollback(now, revert_sha, good_revision=good_sha)
        return DeployResult(revision=revert_sha, previous_revision=bad_revision, patch=now, previous=bad_patch,
                            state=state)

    def rollback_cycle(self, cycle_id: str, reason: str) -> DeployResult:
        """Revert every deployment commit of `cycle_id` (newest first) and return the target to the result."""
        rec = self.journal.get(cycle_id, with_steps=False)
        before = self.git.read_patch()
        top = self.git.head()
        reverts = self.git.revert_cycle(cycle_id, reason)
        if not reverts:
            raise DeployError(f"Cycle {cycle_id} has no deployment commit left to revert.",
                              "Name the revision to revert instead.")
        now = self.git.read_patch()
        if now is None or before is None:
            raise DeployError("The GitOps repository has no patch after the revert.", "Inspect the repository.")
        state = self.deployer.rollback(now, reverts[-1], good_revision=rec.safe_sha)
        return DeployResult(revision=reverts[-1], previous_revision=top, patch=now, previous=before, state=state)

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
