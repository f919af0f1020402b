"""The metrics agent's tools: read Prometheus and the four quality gates. Both are read-only.

Prometheus is always the configured one (AUTOOPT_PROMETHEUS_URL): an agent chooses the query, never the host.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from autooptimizer.tools.context import ToolContext
from autooptimizer.tools.registry import tool


class QueryMetricsArgs(BaseModel):
    promql: str = Field(min_length=1, max_length=2000, description="an instant PromQL query")


class CheckQualityGatesArgs(BaseModel):
    env: Literal["dev", "staging", "prod"] | None = Field(
        None, description="environment profile for thresholds; default AUTOOPT_ENV"
    )


@tool(name="query_metrics", owner="metrics", risk="read")
def query_metrics(args: QueryMetricsArgs, ctx: ToolContext) -> dict[str, Any]:
    """Run one instant PromQL query against the project's Prometheus; errors come back in the result."""
    from autooptimizer.promql import query

    return query(args.promql, ctx.settings.prometheus_url).model_dump()


@tool(name="check_quality_gates", owner="metrics", risk="read")
def check_quality_gates(args: CheckQualityGatesArgs, ctx: ToolContext) -> dict[str, Any]:
    """Evaluate the four quality gates (NDCG drop, p95 latency, cost, retries): ok | firing | unknown each. The NDCG
    gate compares with the loop's anchor too (read, never set here: loop/anchor.py)."""
    from autooptimizer.gates import evaluate_gates

    report = evaluate_gates(prometheus_url=ctx.settings.prometheus_url, env=args.env or ctx.env,
                            anchor=ctx.ndcg_anchor())
    return {**report.public(), "firing": report.firing, "env": report.env, "prometheus_url": report.prometheus_url}
