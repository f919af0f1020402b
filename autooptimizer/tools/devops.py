"""The devops agent's tools: canary, A/B test, promotion, rollback, scaling and variants — all GitOps.

Every change is a commit of `helm_patch.yaml` applied by the deployer (`ctx.release()`, loop/release.py), labelled
with the call's cycle (`ctx.cycle_id`). Policy facts are computed from system state, never from free text:
`ab_passed` is true only when the A/B judge itself wrote a `pass` verdict for exactly this model version
(AUTOOPT_HOME/loop/ab_results/).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any, cast

from pydantic import AfterValidator, BaseModel, Field

from autooptimizer.errors import InputError
from autooptimizer.settings import Settings
from autooptimizer.tools.context import ToolContext
from autooptimizer.tools.registry import tool

AB_RESULT_MAX_AGE_S = 24 * 3600


def _version(v: str) -> str:
    from autooptimizer.search.model_store import check_version_name

    check_version_name(v)
    return v


ModelVersion = Annotated[str, AfterValidator(_version)]


def _require_model(version: str) -> None:
    from autooptimizer.search import model_store

    if not model_store.exists(version):
        known = ", ".join(model_store.list_versions()[-5:]) or "none"
        raise InputError(f"Model version {version!r} does not exist.", f"Use a stored version (latest: {known}).")


def ab_result_path(settings: Settings, model_version: str) -> Path:
    return settings.path("loop", "ab_results", f"{model_version}.json")


def ab_passed_for(settings: Settings, model_version: str) -> bool:
    """The trusted fact: the judge's own latest verdict for this version is `pass`, and recent."""
    try:
        path = ab_result_path(settings, _version(model_version))
        data: Any = json.loads(path.read_text())
    except (OSError, ValueError, InputError):
        return False
    if not isinstance(data, dict):
        return False
    result = cast("dict[str, Any]", data)
    treatment: Any = result.get("treatment")
    return (
        result.get("verdict") == "pass"
        and isinstance(treatment, dict)
        and cast("dict[str, Any]", treatment).get("model_version") == model_version
        and time.time() - path.stat().st_mtime < AB_RESULT_MAX_AGE_S
    )


class DeployCanaryArgs(BaseModel):
    model_version: ModelVersion = Field(description="the challenger to receive a share of traffic")
    weight: float = Field(gt=0, le=1, description="share of live traffic for the canary (policy allows <= 0.5)")


@tool(name="deploy_canary", owner="devops", risk="change", facts=lambda a, ctx: {"canary_weight": a.weight})
def deploy_canary(args: DeployCanaryArgs, ctx: ToolContext) -> dict[str, Any]:
    """Route `weight` of live traffic to a challenger next to the stable model (a GitOps commit)."""
    _require_model(args.model_version)
    rel = ctx.release()
    current, _ = rel.current()
    patch = current.model_copy(update={"canary_version": args.model_version, "canary_weight": args.weight})
    res = rel.deploy(patch, f"Canary {args.model_version} at {args.weight:.0%}", cycle_id=ctx.cycle_id)
    return {"revision": res.revision, "stable": patch.model_version, "canary": args.model_version,
            "canary_weight": args.weight, "deployer": rel.deployer.kind}


class StartABTestArgs(BaseModel):
    model_version: ModelVersion = Field(description="the treatment (the canary)")
    control_version: str | None = Field(None, description="default: the stable version in git")
    min_samples: int | None = Field(None, ge=2, le=100000)
    max_duration_seconds: float | None = Field(None, gt=0, le=24 * 3600)


@tool(name="start_ab_test", owner="devops", risk="change")
def start_ab_test(args: StartABTestArgs, ctx: ToolContext) -> dict[str, Any]:
    """Judge the running canary against the stable model on live traffic; writes ab_test_results.json."""
    from autooptimizer.loop.abtest import ABConfig, run_ab_test
    from autooptimizer.loop.deployer import DeployError
    from autooptimizer.policies.killswitch import kill_switch

    settings = ctx.settings
    rel = ctx.release()
    current, _ = rel.current()
    if current.canary_version != args.model_version or current.canary_weight <= 0:
        raise InputError(f"{args.model_version} is not the running canary (canary: {current.canary_version}).",
                         "Deploy it with deploy_canary first.")
    served = rel.deployer.state()
    if not served.matches(current):  # e.g. the service restarted without its canary: there is nothing to measure
        raise DeployError(f"The service does not serve git's desired state (it serves "
                          f"{served.model_dump(exclude_none=True)}; git says {current.model_dump()}), so an A/B "
                          "test would measure nothing.", "Re-apply the desired state (a new cycle restores it), "
                          "then test again.")
    control = args.control_version or current.model_version
    overrides = {k: v for k, v in {"min_samples": args.min_samples,
                                   "max_duration_seconds": args.max_duration_seconds}.items() if v is not None}
    cfg = ABConfig.from_profile(ctx.profile, **overrides)
    result = run_ab_test(ctx.source(), control, args.model_version, cfg, should_stop=kill_switch.is_on)
    ab_result_path(settings, args.model_version).write_text(json.dumps(result.model_dump(mode="json"), indent=2))
    if ctx.cycle_id:
        result.write(settings.home / "artifacts" / ctx.cycle_id / "ab_test_results.json")
    return result.model_dump(mode="json")


class PromoteModelArgs(BaseModel):
    model_version: ModelVersion = Field(description="the challenger that passed its A/B test")


@tool(name="promote_model", owner="devops", risk="critical",
      facts=lambda a, ctx: {"ab_passed": ab_passed_for(ctx.settings, a.model_version)})
def promote_model(args: PromoteModelArgs, ctx: ToolContext) -> dict[str, Any]:
    """Make the challenger the stable model for all traffic (a GitOps commit); the canary is removed."""
    _require_model(args.model_version)
    rel = ctx.release()
    current, _ = rel.current()
    patch = current.model_copy(update={"model_version": args.model_version, "canary_version": None,
                                       "canary_weight": 0.0})
    res = rel.deploy(patch, f"Promote {args.model_version} (replaces {current.model_version})",
                     cycle_id=ctx.cycle_id)
    return {"revision": res.revision, "previous_revision": res.previous_revision, "stable": args.model_version,
            "replaced": current.model_version, "deployer": rel.deployer.kind}


class RollbackArgs(BaseModel):
    reason: str = Field(min_length=1, max_length=500)
    revision: str | None = Field(None, pattern=r"^[0-9a-f]{7,40}$",
                                 description="the commit to revert; default: the latest deployment commit")
    cycle_id: str | None = Field(None, pattern=r"^si_\d{4}_\d{2}_\d{2}_\d{3,}$",
                                 description="revert every deployment commit of this cycle instead")


@tool(name="rollback_deployment", owner="devops", risk="critical")
def rollback_deployment(args: RollbackArgs, ctx: ToolContext) -> dict[str, Any]:
    """Restore the exact state before a deployment (or before its whole cycle) and verify the service serves it."""
    rel = ctx.release()
    if args.cycle_id:
        res = rel.rollback_cycle(args.cycle_id, args.reason)
        reverted = f"cycle {args.cycle_id}"
    else:
        reverted = args.revision or rel.latest_deployment()
        res = rel.rollback(reverted, args.reason, cycle_id=ctx.cycle_id)
    return {"revision": res.revision, "reverted": reverted, "stable": res.patch.model_version,
            "canary": res.patch.canary_version, "canary_weight": res.patch.canary_weight,
            "replicas": res.patch.replicas, "rerank_depth": res.patch.rerank_depth,
            "removed": res.previous.model_version, "deployer": rel.deployer.kind}


class ScaleArgs(BaseModel):
    replicas: int = Field(ge=1, le=16)


@tool(name="scale_service", owner="devops", risk="change")
def scale_service(args: ScaleArgs, ctx: ToolContext) -> dict[str, Any]:
    """Set the search service's replicas (worker slots) — the latency gate's first remedy."""
    rel = ctx.release()
    current, _ = rel.current()
    res = rel.deploy(current.model_copy(update={"replicas": args.replicas}),
                     f"Scale to {args.replicas} replicas (was {current.replicas})", cycle_id=ctx.cycle_id)
    return {"revision": res.revision, "replicas": args.replicas, "previous_replicas": current.replicas}


class SwitchVariantArgs(BaseModel):
    rerank_depth: int = Field(ge=5, le=200, description="BM25 candidates the reranker scores; smaller is cheaper")


@tool(name="switch_variant", owner="devops", risk="change")
def switch_variant(args: SwitchVariantArgs, ctx: ToolContext) -> dict[str, Any]:
    """Serve a faster/cheaper variant: rerank fewer BM25 candidates."""
    rel = ctx.release()
    current, _ = rel.current()
    res = rel.deploy(current.model_copy(update={"rerank_depth": args.rerank_depth}),
                     f"Switch to rerank depth {args.rerank_depth} (was {current.rerank_depth or 'default'})",
                     cycle_id=ctx.cycle_id)
    return {"revision": res.revision, "rerank_depth": args.rerank_depth, "previous": current.rerank_depth}
