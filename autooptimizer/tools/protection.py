"""Protected model versions: the facts the PDP needs before anything may delete or re-alias a version.

A version is protected while it holds any of these roles (`PROTECTED_ROLES`):

| role              | read from                                                                             |
|-------------------|---------------------------------------------------------------------------------------|
| `gold`            | the `gold` alias (aliases.json)                                                       |
| `champion`        | the `champion` alias                                                                  |
| `serving`         | the stable version of git's desired state, in any environment                         |
| `canary`          | the canary of git's desired state, in any environment                                 |
| `safe_point`      | the patch a running cycle would restore (its journaled safe point)                    |
| `rollback_window` | a stable or canary version in the last `loop.rollbackDepth` deploy commits of any env |

Every role is read from stored state; if any source cannot be read, `protection_facts` raises and the registry
denies the call (`registry.facts-error`): an unreadable fact never reads as "unprotected". The facts carry
`target_checked: true` only when every role was read, and the Cedar policies refuse deletion and re-aliasing
without it (`shared.protection-unchecked`), so a tool that forgets to supply them is denied too.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from autooptimizer.settings import ENVIRONMENTS, Settings

if TYPE_CHECKING:
    from autooptimizer.loop.gitops import HelmPatch

PROTECTED_ROLES = ("gold", "champion", "serving", "canary", "safe_point", "rollback_window")
ROLE_FACTS = {"gold": "target_is_gold", "champion": "target_is_champion", "serving": "target_is_serving",
              "canary": "target_is_canary", "safe_point": "target_is_safe_point",
              "rollback_window": "target_in_rollback_window"}


def _patch_versions(patch: HelmPatch | None) -> set[str]:
    if patch is None:
        return set()
    return {patch.model_version} | ({patch.canary_version} if patch.canary_version else set())


def desired_states(settings: Settings, envs: Iterable[str] = ENVIRONMENTS) -> dict[str, HelmPatch | None]:
    """Git's desired HelmPatch per environment (None where an env has none yet). Raises GitError when git fails."""
    from autooptimizer.loop.gitops import GitOpsRepo

    envs = list(envs)
    GitOpsRepo(settings, env=envs[0]).ensure()  # one fetch: every env's file lives in the same repository
    return {env: GitOpsRepo(settings, env=env).read_patch(sync=False) for env in envs}


def rollback_window_versions(settings: Settings, depth: int, envs: Iterable[str] = ENVIRONMENTS) -> set[str]:
    """Stable and canary versions of the last `depth` deploy commits of each env: what a rollback may return to."""
    from autooptimizer.loop.gitops import GitOpsRepo

    envs = list(envs)
    GitOpsRepo(settings, env=envs[0]).ensure()
    out: set[str] = set()
    for env in envs:
        repo = GitOpsRepo(settings, env=env)
        for commit in repo.log(limit=depth + 1, sync=False):  # the state before the oldest of N deploys counts
            out |= _patch_versions(repo.read_patch(commit.sha, sync=False))
    return out


def safe_point_versions(settings: Settings) -> set[str]:
    """Versions a running cycle's safe point would restore."""
    from autooptimizer.loop.gitops import HelmPatch
    from autooptimizer.loop.journal import Journal

    out: set[str] = set()
    for rec in Journal(settings).running():
        if rec.safe_patch:
            out |= _patch_versions(HelmPatch.model_validate(rec.safe_patch))
    return out


def protected_roles(version: str, settings: Settings, rollback_depth: int) -> set[str]:
    """The roles `version` holds now (a subset of PROTECTED_ROLES). Raises when a source cannot be read."""
    from autooptimizer.search import aliases

    held = aliases.all_aliases()
    roles = {name for name in ("gold", "champion") if held.get(name) == version}
    desired = desired_states(settings)
    if any(p is not None and p.model_version == version for p in desired.values()):
        roles.add("serving")
    if any(p is not None and p.canary_version == version for p in desired.values()):
        roles.add("canary")
    if version in safe_point_versions(settings):
        roles.add("safe_point")
    if version in rollback_window_versions(settings, rollback_depth):
        roles.add("rollback_window")
    return roles


def protection_facts(version: str, settings: Settings, rollback_depth: int) -> dict[str, bool]:
    """PDP facts for a call that would delete or re-alias `version`: `target_checked` plus one bool per role."""
    roles = protected_roles(version, settings, rollback_depth)
    return {"target_checked": True, **{fact: role in roles for role, fact in ROLE_FACTS.items()}}
