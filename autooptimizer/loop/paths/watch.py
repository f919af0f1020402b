"""After a deploy: watch the new version against the one it replaced, roll back on degradation, and move the
registry's `champion` once a promotion survived; deploy_watch does the same for the latest deployment commit, and
every cycle first watches a deploy the loop did not make (an operator's commit, `unwatched_deploy`)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from pydantic import BaseModel

from autooptimizer.errors import AutoOptError
from autooptimizer.loop.abtest import ABConfig
from autooptimizer.loop.alerts import raise_alert
from autooptimizer.loop.artifacts import write_helm_patch
from autooptimizer.loop.cycle_types import CycleOptions, CycleState, CycleStop

if TYPE_CHECKING:
    from autooptimizer.loop.cycle import CycleRunner
    from autooptimizer.profiles import Profile


def watch(runner: CycleRunner, cid: str, opts: CycleOptions, state: CycleState, *, new: str, old: str,
          bad_revision: str, outcome_ok: str, baseline_until: float | None = None, revert_cycle: bool = False,
          baseline_since: float | None = None) -> tuple[str, str]:
    """Watch `new` against `old`'s samples from `baseline_since` (the A/B test's control arm when there was one,
    else the gate's baseline window before the deploy: the traffic mix the new version now serves)."""
    from autooptimizer.loop.watch import watch_deployment

    seconds = opts.watch_seconds or runner.profile.loop.watch_window_seconds
    deployed = baseline_until or time.time()
    if baseline_since is None:
        baseline_since = deployed - runner.profile.gates.baseline_window_seconds
    cfg = watch_config(runner.profile, opts)

    def progress(n: int, elapsed: float) -> None:
        runner.emit("watch", cycle_id=cid, samples=n, elapsed=elapsed)

    verdict = runner.step(cid, "watch", lambda: watch_deployment(
        runner.source, new=new, old=old, seconds=seconds, config=cfg, since=time.time(),
        baseline_until=baseline_until, baseline_since=baseline_since, on_progress=progress))
    state.watch = verdict
    if not verdict["degraded"]:
        runner.journal.mark_clean(cid)
        if outcome_ok == "promoted":
            move_champion(runner, cid, state, new)
        return outcome_ok, f"{new} serves; the {seconds:.0f} s watch saw no degradation"
    if not runner.profile.loop.rollback_on_degrade:
        raise_alert(runner.settings, "AutoOptDegradedNoRollback", f"{new} degraded; rollbackOnDegrade is off",
                    labels={"cycle_id": cid})
        runner.journal.mark_clean(cid)
        return "degraded", f"{new} degraded ({'; '.join(verdict['reasons'])}); rollback disabled by profile"
    t0 = time.time()
    target = {"cycle_id": cid} if revert_cycle else {"revision": bad_revision}
    rb = runner.step(cid, "rollback", lambda: runner.tool(
        state, "devops", "rollback_deployment",
        {"reason": f"{new} degraded: {'; '.join(verdict['reasons'])}"[:500], **target}))
    state.rollback = {**rb, "seconds": round(time.time() - t0, 3),
                      "detect_to_restored_seconds": round(time.time() - verdict["detected_at"], 3)}
    runner.journal.mark_clean(cid)
    write_helm_patch(runner.artifacts_dir(cid), runner.release)
    raise_alert(runner.settings, "AutoOptRolledBack", f"{new} rolled back to {rb['stable']}: "
                f"{'; '.join(verdict['reasons'])}", severity="critical",
                labels={"cycle_id": cid, "model_version": new}, details=state.rollback)
    return "rolled_back", f"{new} degraded and was rolled back to {rb['stable']}"


def watch_config(profile: Profile, opts: CycleOptions) -> ABConfig:
    """The judge's settings for the watch: the A/B's, with the watch's own sample minimum (loop.watchMinSamples;
    a cycle's ab_min_samples overrides both)."""
    return ABConfig.from_profile(profile, min_samples=opts.ab_min_samples or profile.loop.watch_min_samples)


def move_champion(runner: CycleRunner, cid: str, state: CycleState, version: str) -> None:
    """After a promotion survived its watch, the registry's `champion` alias follows what serves (ml agent,
    gated). The deployment is already final: a refusal here is recorded and alerted, never rolled back."""
    try:
        res = runner.step(cid, "champion_alias", lambda: runner.tool(
            state, "ml", "set_model_alias", {"alias": "champion", "version": version}, evidence={"cycle_id": cid}))
        state.champion_alias = {"version": version, "mlflow_version": res.get("mlflow_version")}
    except (CycleStop, AutoOptError) as exc:
        state.champion_alias = {"version": version, "error": str(exc)}
        raise_alert(runner.settings, "AutoOptAliasNotMoved", f"{version} serves but `champion` was not moved: {exc}",
                    labels={"cycle_id": cid, "model_version": version})


def deploy_watch_path(runner: CycleRunner, cid: str, opts: CycleOptions, state: CycleState) -> tuple[str, str]:
    """Watch the latest deployment commit against the one before it (e.g. after a manual deploy)."""
    git = runner.release.git
    head = git.head()
    new_patch = git.read_patch(head)
    before = git.parent(head)
    prev_patch = git.read_patch(before) if before else None
    if new_patch is None or prev_patch is None or new_patch.model_version == prev_patch.model_version:
        raise CycleStop("no_action", "the latest deployment commit did not change the stable model",
                        restore=False)
    deployed_at = git.commit_time(head)
    state.watched_revision, state.new, state.old = head, new_patch.model_version, prev_patch.model_version
    return watch(runner, cid, opts, state, new=new_patch.model_version, old=prev_patch.model_version,
                 bad_revision=head, outcome_ok="kept", baseline_until=deployed_at)


class UnwatchedDeploy(BaseModel):
    """A stable model the loop did not deploy and no cycle has watched: `revision` is the commit that made `new`
    the stable version (outside any cycle), `old` the safe point (the registry's `champion`)."""

    revision: str
    new: str
    old: str
    deployed_at: float


def unwatched_deploy(runner: CycleRunner, *, depth: int = 50) -> UnwatchedDeploy | None:
    """The deploy an operator made behind the loop's back, if one serves now: git's desired stable version differs
    from `champion`, the commit that made it stable carries no cycle id, and no journaled cycle watched that commit.

    None when git serves the champion, when the loop's own cycle deployed it, when a cycle already watched it, or
    when there is no champion alias (no safe point to roll back to: an operator's `--gate deploy_watch` still
    watches against the previous commit). Git errors propagate: the cycle fails closed rather than guess."""
    from autooptimizer.search import aliases

    champion = aliases.get_alias(aliases.CHAMPION)
    git = runner.release.git
    head_patch = git.read_patch()
    if champion is None or head_patch is None or head_patch.model_version == champion:
        return None
    serving = head_patch.model_version
    commits = git.log(limit=depth)
    deploy = None
    for commit, older in zip(commits, [*commits[1:], None], strict=True):
        if older is None:
            return None  # the first deployment (or beyond `depth`): nothing before it to watch against
        prev = git.read_patch(older.sha, sync=False)
        if prev is None or prev.model_version != serving:
            deploy = commit
            break
    if deploy is None or deploy.cycle_id is not None:
        return None
    if any(rec.summary.get("watched_revision") == deploy.sha for rec in runner.journal.list(500)):
        return None
    return UnwatchedDeploy(revision=deploy.sha, new=serving, old=champion, deployed_at=git.commit_time(deploy.sha))


def unwatched_deploy_path(runner: CycleRunner, cid: str, opts: CycleOptions, state: CycleState,
                          found: UnwatchedDeploy) -> tuple[str, str]:
    """Watch an operator's deploy against the champion's samples before it; roll the commit back on degradation
    (the same fail-closed watch as after a promotion: unreadable health reads as degraded). A deploy that survives
    the watch is adopted: `champion` follows what serves, so the next cycle does not watch it again."""
    state.watched_revision, state.new, state.old = found.revision, found.new, found.old
    outcome, reason = watch(runner, cid, opts, state, new=found.new, old=found.old, bad_revision=found.revision,
                            outcome_ok="kept", baseline_until=found.deployed_at)
    if outcome == "kept":
        move_champion(runner, cid, state, found.new)
    return outcome, f"an operator's deploy ({found.revision[:12]}): {reason}"
