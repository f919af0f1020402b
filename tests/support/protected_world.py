"""The deploy history the protection tests share (tests/reliability/test_protected_objects.py and
tests/test_loop_retention.py): one version in each GitOps-derived protected role, in a real GitOps repository and
a real journal."""

from __future__ import annotations

from autooptimizer.loop.gitops import GitOpsRepo, HelmPatch
from autooptimizer.loop.journal import CycleRecord, Journal
from autooptimizer.settings import get_settings


def deploy_protected_history(staging_version: str) -> tuple[Journal, CycleRecord]:
    """Commit the desired states and journal a running cycle; returns (journal, the running cycle's record).

    dev: v-old, then v-mid twice, v-window, then four v-dev deploys: with rollbackDepth 5 the window holds the last
    five deploys and the state before them (v-window, v-mid), and v-old has dropped out of it. prod serves v-prod;
    staging serves `staging_version` with v-canary at weight 0.2. A running prod cycle's journaled safe point is
    v-safe. The versions themselves are the caller's to create."""
    settings = get_settings()
    dev = GitOpsRepo(settings, env="dev")
    for patch in [HelmPatch(model_version="v-old"), HelmPatch(model_version="v-mid"),
                  HelmPatch(model_version="v-mid", replicas=2), HelmPatch(model_version="v-window"),
                  *[HelmPatch(model_version="v-dev", replicas=r) for r in (1, 2, 3, 4)]]:
        dev.commit_patch(patch, f"deploy {patch.model_version} x{patch.replicas}")
    GitOpsRepo(settings, env="prod").commit_patch(HelmPatch(model_version="v-prod"), "prod")
    GitOpsRepo(settings, env="staging").commit_patch(
        HelmPatch(model_version=staging_version, canary_version="v-canary", canary_weight=0.2), "staging canary")
    journal = Journal(settings)
    running = journal.new_cycle(trigger="test", env="prod")
    journal.mark_dirty(running.id, HelmPatch(model_version="v-safe").model_dump(), None)
    return journal, running
