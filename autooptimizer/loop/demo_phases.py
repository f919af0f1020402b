"""The loop's phases of `autoopt demo` (run after the gate part in autooptimizer/demo.py, with the stack still up):

  fix       the NDCG gate is firing: one full cycle — diagnose, augment, train a challenger, evaluate offline,
            canary it in the live service, A/B it on the live (shifted) traffic, promote it by a GitOps commit,
            watch it — and check the service now serves it
  bad       an operator promotes a deliberately bad model (an untrained cross-encoder head) by a GitOps commit;
            a watch cycle sees NDCG collapse and rolls it back automatically (git revert + local deployer)

Each phase appends {"id", "outcome", "artifacts_dir"} to the demo's `cycles`.
"""

from __future__ import annotations

import os
import time
from typing import Any, cast

import httpx

BAD_VERSION = "bad-untrained-cross-encoder"


def _point_settings_at(ctx: Any) -> Any:
    """Make every tool (they read get_settings()) talk to the demo's stack."""
    from autooptimizer.settings import get_settings

    os.environ["AUTOOPT_PROMETHEUS_URL"] = ctx.stack.prometheus_url
    os.environ["AUTOOPT_SEARCH_PORT"] = ctx.stack.search_url.rsplit(":", 1)[1]
    get_settings.cache_clear()
    return get_settings()


def _runner(ctx: Any) -> Any:
    from autooptimizer.loop.cycle import CycleRunner

    def show(kind: str, data: dict[str, Any]) -> None:
        if kind == "step_start":
            ctx.say(f"cycle {data['cycle_id']}: {data['step']}")
        elif kind == "cycle_end":
            ctx.say(f"cycle {data['cycle_id']}: {data['outcome']} ({data['reason']})")
        elif kind == "watch":
            ctx.say(f"watch: {data['samples']} NDCG samples after {data['elapsed']:.0f} s")

    return CycleRunner(_point_settings_at(ctx), profile=ctx.profile, on_event=show)


def _serving(ctx: Any) -> str | None:
    state: dict[str, Any] = httpx.get(ctx.stack.search_url + "/admin/state", timeout=10).json()
    stable: Any = state.get("stable") or {}
    return cast("dict[str, Any]", stable).get("version") if isinstance(stable, dict) else stable


def _record(ctx: Any, rec: Any) -> None:
    cycles = getattr(ctx.result, "cycles", None)
    if cycles is not None:
        cycles.append({"id": rec.id, "outcome": rec.outcome, "artifacts_dir": rec.artifacts_dir})


def align_desired_state(ctx: Any) -> dict[str, Any]:
    """GitOps must describe what the demo serves: a reused AUTOOPT_HOME holds an earlier run's promotion in git while
    the demo serves the baseline again. One commit makes them agree (the apply is a no-op swap)."""
    from autooptimizer.loop.release import Release

    rel = Release(_point_settings_at(ctx))
    serving = _serving(ctx)
    current, head = rel.current()
    if serving is None or (current.model_version == serving and not current.canary_version):
        return {"committed": False, "revision": head, "serving": serving}
    patch = current.model_copy(update={"model_version": serving, "canary_version": None, "canary_weight": 0.0})
    rel.deploy(patch, f"Demo: serve the baseline {serving} (was {current.model_version})")
    ctx.say(f"GitOps desired state set to the served baseline {serving} (was {current.model_version})")
    return {"committed": True, "revision": rel.git.head(), "serving": serving, "was": current.model_version}


def phase_fix(ctx: Any) -> Any:
    from autooptimizer.demo import DemoPhase
    from autooptimizer.loop.cycle import CycleOptions

    aligned = align_desired_state(ctx)
    runner = _runner(ctx)
    t0 = time.monotonic()
    rec = runner.run(CycleOptions(trigger="demo", domain_data=ctx.opts.shift_to, original=ctx.opts.datasets[0],
                                  seed=ctx.opts.seed, ab_min_samples=ctx.opts.ab_min_samples))
    _record(ctx, rec)
    serving = _serving(ctx)
    ok = rec.outcome == "promoted" and serving == rec.summary.get("challenger")
    shift_wall = time.time() - (time.monotonic() - (ctx.shifted_at or t0))
    promote = next((s for s in rec.steps if s.name == "promote" and s.finished_at), None)
    detail = {"cycle_id": rec.id, "outcome": rec.outcome, "reason": rec.summary.get("reason"),
              "challenger": rec.summary.get("challenger"), "serving": serving, "artifacts_dir": rec.artifacts_dir,
              "ab_verdict": rec.summary.get("ab_verdict"), "offline": rec.summary.get("offline"),
              "gitops_aligned": aligned,
              "cycle_s": round(time.monotonic() - t0, 1),
              "shift_to_promoted_s": round(promote.finished_at - shift_wall, 1) if promote else None,
              "shift_to_watched_s": round(time.monotonic() - (ctx.shifted_at or t0), 1),
              "steps": [(s.name, s.status, round((s.finished_at or s.started_at) - s.started_at, 1))
                        for s in rec.steps]}
    return DemoPhase(name="fix", status="ok" if ok else "failed", detail=detail)


def phase_bad(ctx: Any) -> Any:
    from autooptimizer.demo import DemoPhase
    from autooptimizer.loop.cycle import CycleOptions
    from autooptimizer.loop.release import Release
    from autooptimizer.search import model_store
    from autooptimizer.search.model_store import ModelSpec

    runner = _runner(ctx)
    if not model_store.exists(BAD_VERSION):
        model_store.save(ModelSpec(version=BAD_VERSION, kind="cross_encoder", fusion_weight=1.0, rerank_depth=20,
                                   notes="deliberately bad: an untrained cross-encoder head ranks at random"))
    rel = Release(runner.settings, journal=runner.journal)
    current, _ = rel.current()
    ctx.say(f"operator promotes {BAD_VERSION} over {current.model_version} (a GitOps commit)")
    t0 = time.monotonic()
    rel.deploy(current.model_copy(update={"model_version": BAD_VERSION, "canary_version": None,
                                          "canary_weight": 0.0}), f"Promote {BAD_VERSION} (manual)")
    deployed_s = time.monotonic() - t0
    rec = runner.run(CycleOptions(trigger="demo", gate="deploy_watch", watch_seconds=120))
    total = time.monotonic() - t0
    _record(ctx, rec)
    serving = _serving(ctx)
    ok = rec.outcome == "rolled_back" and serving == current.model_version
    detail = {"cycle_id": rec.id, "outcome": rec.outcome, "reason": rec.summary.get("reason"), "serving": serving,
              "deploy_s": round(deployed_s, 1), "bad_deploy_to_rollback_s": round(total, 1),
              "rollback": rec.summary.get("rollback"), "artifacts_dir": rec.artifacts_dir}
    return DemoPhase(name="bad", status="ok" if ok else "failed", detail=detail)


LOOP_PHASES = [phase_fix, phase_bad]
