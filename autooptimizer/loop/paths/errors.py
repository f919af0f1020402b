"""retries: read the retry counters into diagnostic_report.json, then roll back the latest deploy when a cycle made
it (it is the suspect), else restart the serving pipelines."""

from __future__ import annotations

from typing import TYPE_CHECKING

from autooptimizer.loop.alerts import raise_alert
from autooptimizer.loop.artifacts import write_json
from autooptimizer.loop.cycle_types import CycleOptions, CycleState, Restartable

if TYPE_CHECKING:
    from autooptimizer.loop.cycle import CycleRunner


def errors_path(runner: CycleRunner, cid: str, opts: CycleOptions, state: CycleState) -> tuple[str, str]:
    from autooptimizer.search import metric_names as m

    evidence = runner.step(cid, "diagnose_errors", lambda: runner.tool(
        state, "metrics", "query_metrics",
        {"promql": f"sort_desc(increase({m.RETRIES_TOTAL}[{runner.profile.gates.window_seconds}s]))"}))
    current, head = runner.release.current()
    last = runner.release.git.log(limit=1)
    recent = bool(last) and last[0].sha == head and not last[0].reverted and last[0].cycle_id is not None
    report = {"gate": "retries", "evidence": evidence, "serving": current.model_dump(), "revision": head,
              "recent_deploy_suspect": recent,
              "action": "rollback_deployment" if recent else "restart"}
    write_json(runner.artifacts_dir(cid) / "diagnostic_report.json", report)
    if recent:
        rb = runner.step(cid, "rollback", lambda: runner.tool(state, "devops", "rollback_deployment",
                                                              {"reason": "repeated errors after deploy",
                                                               "revision": head}))
        runner.journal.mark_clean(cid)
        raise_alert(runner.settings, "AutoOptRolledBack", f"repeated errors: rolled back {head[:12]}",
                    labels={"cycle_id": cid})
        return "rolled_back", f"repeated errors after deploy {head[:12]}: rolled back to {rb['stable']}"
    deployer = runner.release.deployer
    if isinstance(deployer, Restartable):
        runner.step(cid, "restart", lambda: deployer.restart().model_dump())
        return "restarted", "repeated errors with no suspect deploy: the serving pipelines were rebuilt"
    return "diagnosed", "repeated errors: diagnostic report written; no restart available on this deployer"
