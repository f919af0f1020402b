"""Environment profiles (dev, staging, prod): validated YAML that operators edit.

`load_profile(name)` reads `AUTOOPT_PROFILES_DIR/<name>.yaml` when that directory is set, else the
packaged file. Unknown keys are errors, so a typo cannot silently fall back to a default.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from autooptimizer.agents.budgets import LLMBudgets
from autooptimizer.errors import ConfigError

_HERE = Path(__file__).parent


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class MinSamples(_Strict):
    """Per gate, the fewest samples a reading may rest on; below it the gate reads `unknown` (too little data to
    decide). Counted per window: feedback for ndcg_drop (both the current and the baseline window), requests for the
    others. Defaults come from the A/A measurement in docs/benchmarks.md ("Gate false alarms")."""

    ndcg_drop: int = Field(default=100, alias="ndcgDrop", ge=1, le=1_000_000)
    p95_latency: int = Field(default=20, alias="p95Latency", ge=1, le=1_000_000)
    cost_budget: int = Field(default=10, alias="costBudget", ge=1, le=1_000_000)
    retries: int = Field(default=10, alias="retries", ge=1, le=1_000_000)


class Gates(_Strict):
    ndcg_drop_pct: float = Field(default=3.0, alias="ndcgDropPct", gt=0)
    p95_latency_ms: float = Field(default=800, alias="p95LatencyMs", gt=0)
    cost_budget_pct: float = Field(default=80.0, alias="costBudgetPct", gt=0, le=100)
    max_retries: int = Field(default=3, alias="maxRetries", ge=0)
    window_seconds: int = Field(default=30, alias="windowSeconds", ge=5)
    baseline_window_seconds: int = Field(default=120, alias="baselineWindowSeconds", ge=10)
    min_samples: MinSamples = Field(default=MinSamples(), alias="minSamples")
    consecutive_readings: int = Field(default=5, alias="consecutiveReadings", ge=1, le=100,
                                      description="a gate starts a cycle only after firing on this many readings "
                                                  "in a row (Flagger's `threshold`, Argo Rollouts' `failureLimit`)")
    read_interval_seconds: float = Field(default=5.0, alias="readIntervalSeconds", ge=1, le=3600,
                                         description="how often the scheduler reads the gates")


class Cost(_Strict):
    price_per_compute_second: float = Field(default=0.0005, alias="pricePerComputeSecond", ge=0)
    budget: float = Field(default=5.0, gt=0)
    integration: bool = False


class Promotion(_Strict):
    new_domain_margin: float = Field(default=0.01, alias="newDomainMargin", ge=0)
    original_tolerance: float = Field(default=0.01, alias="originalTolerance", ge=0)
    max_serving_cost_ratio: float | None = Field(
        default=1.2, alias="maxServingCostRatio", gt=1.0,
        description="challenger CPU time per query / the champion's, measured side by side; above it the challenger "
                    "is refused (unmeasured: refused too). null switches the check off")
    forgetting_tolerance: float = Field(
        default=0.01, alias="forgettingTolerance", ge=0, le=1,
        description="the forgetting guard (ml/forgetting.py): on every fixed evaluation set (each repaired domain's "
                    "held-out queries, the original domain's test split) the challenger may be at most this below "
                    "max(its best promoted NDCG@10, gold's)")


class ABTest(_Strict):
    enabled: bool = True
    min_samples: int = Field(default=20, alias="minSamples", ge=2)
    max_duration_seconds: float = Field(default=120, alias="maxDurationSeconds", gt=0)
    alpha: float = Field(default=0.05, gt=0, lt=1)
    canary_weight: float = Field(default=0.5, alias="canaryWeight", gt=0, le=0.5)
    min_guard_requests: int = Field(default=20, alias="minGuardRequests", ge=1, le=1_000_000,
                                    description="requests per arm before its p95/error-rate guard may decide "
                                                "(fewer: the guard reads unknown)")
    # Latency guard of the A/B judge and the watch (loop/abtest.py): the treatment regresses only when its
    # per-request latencies are significantly slower AND the median shift exceeds max(pct of control, slack).
    latency_tolerance_pct: float = Field(default=20.0, alias="latencyTolerancePct", ge=0)
    latency_slack_ms: float = Field(default=25.0, alias="latencySlackMs", ge=0)
    latency_min_samples: int = Field(default=20, alias="latencyMinSamples", ge=5)
    error_tolerance: float = Field(default=0.01, alias="errorTolerance", ge=0, le=1)


class Loop(_Strict):
    scheduler: bool = False
    interval_minutes: float = Field(default=30, alias="intervalMinutes", gt=0)
    auto_promote: bool = Field(default=True, alias="autoPromote")
    rollback_on_degrade: bool = Field(default=True, alias="rollbackOnDegrade")
    watch_window_seconds: float = Field(default=30, alias="watchWindowSeconds", gt=0)
    watch_min_samples: int = Field(
        default=20, alias="watchMinSamples", ge=2, le=1_000_000,
        description="NDCG@10 samples of the new version the post-promotion watch needs by the end of its window "
                    "(fewer: unverified, rolled back). Not abTest.minSamples, which sizes one A/B judgement over up "
                    "to maxDurationSeconds: the watch window holds watchWindowSeconds x the request rate")
    mock_signals: bool = Field(default=False, alias="mockSignals")
    rollback_depth: int = Field(default=5, alias="rollbackDepth", ge=1, le=100,
                                description="deploys a rollback may return to; their model versions are protected")


class Retention(_Strict):
    """What `prune_storage` keeps (loop/retention.py): the newest N of each kind, optionally also dropping items older
    than `maxAgeDays`; the feedback log keeps its records of the last `feedbackLogDays` within `feedbackLogMB`.
    Protected objects (gold, champion, serving, canary, safe point, rollback window) are never counted or deleted."""

    model_versions: int = Field(default=12, alias="modelVersions", ge=1, le=100_000)
    datasets: int = Field(default=20, ge=1, le=100_000)
    mlflow_runs: int = Field(default=50, alias="mlflowRuns", ge=1, le=1_000_000)
    cycle_artifacts: int = Field(default=30, alias="cycleArtifacts", ge=1, le=100_000)
    traces: int = Field(default=200, ge=1, le=1_000_000)
    feedback_log_mb: float = Field(default=64.0, alias="feedbackLogMB", gt=0)
    feedback_log_days: float | None = Field(
        default=7.0, alias="feedbackLogDays", gt=0,
        description="the feedback log also drops records whose `ts` is older than this many days (None: size only); "
                    "its readers need hours to days of it: A/B tests and watches read since their start, a retrain "
                    "the shifted domain's records served by the current champion")
    max_age_days: float | None = Field(default=None, alias="maxAgeDays", gt=0)
    after_each_cycle: bool = Field(default=False, alias="afterEachCycle",
                                   description="run prune_storage (gated) at the end of every cycle")


class Retrain(_Strict):
    min_new_feedback: int = Field(
        default=40, alias="minNewFeedback", ge=1, le=100_000,
        description="distinct judged queries of the shifted domain served by the current champion (new since the "
                    "last retrain) before a cycle retrains; fewer: the retrain waits (docs/benchmarks.md, Repair: "
                    "learning curve)")


class Profile(_Strict):
    name: str
    gates: Gates = Gates()
    cost: Cost = Cost()
    promotion: Promotion = Promotion()
    ab_test: ABTest = Field(default=ABTest(), alias="abTest")
    loop: Loop = Loop()
    retention: Retention = Retention()
    llm: LLMBudgets = LLMBudgets()  # agent runs on a model: per-reply and per-run budgets (agents/budgets.py)
    retrain: Retrain = Retrain()


def profile_path(name: str) -> Path:
    base = Path(os.environ.get("AUTOOPT_PROFILES_DIR") or _HERE)
    return base / f"{name}.yaml"


def load_profile(name: str) -> Profile:
    path = profile_path(name)
    if not path.is_file():
        raise ConfigError(
            f"Environment profile {name!r} not found at {path}.",
            "Use dev, staging or prod, or set AUTOOPT_PROFILES_DIR.",
        )
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        return Profile.model_validate(raw)
    except (yaml.YAMLError, ValidationError) as exc:
        raise ConfigError(
            f"Profile file {path} is invalid: {exc}", "Correct the file; see docs/operations.md for the keys."
        ) from exc
