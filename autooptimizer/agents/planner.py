"""The offline planner: the built-in "model" used when no LLM is configured.

It is deterministic. The supervisor routes the goal with the embedding router and delegates along the
playbook; a specialist runs its job's tools in order, filling arguments from the goal, from earlier tool
results and from the environment profile, and reports back. It reads and writes only the framework-neutral
`Turn`/`Action`; `autogen_client.py` and `crews/llm.py` translate to each framework's model interface, so the
real AutoGen and CrewAI machinery runs around it.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any, Literal

from pydantic import BaseModel, Field

from autooptimizer.agents.goal import read_goal
from autooptimizer.agents.playbooks import load_playbooks
from autooptimizer.agents.protocol import Delegation, Outcome, Report, Resume
from autooptimizer.agents.router import CLARIFY
from autooptimizer.agents.specs import SUPERVISOR
from autooptimizer.search import metric_names as m

MAX_ATTEMPTS = 3
CHEAP_RERANK_DEPTH = 20  # switch_variant default: score fewer BM25 candidates (cheaper), unless the goal says
# Argument names a tool may use for the same fact (first found wins; the field's own name is tried first).
ALIASES: dict[str, list[str]] = {
    "model_version": ["version", "challenger_version", "candidate_version", "registered_version"],
    "version": ["model_version", "challenger_version", "candidate_version", "registered_version"],
    "challenger_version": ["model_version", "version", "registered_version"],
    "challenger": ["challenger_version", "model_version", "version"],
    "candidate": ["model_version", "version"],
    "champion_version": ["champion"],
    "weight": ["canary_weight"],
    "canary_weight": ["weight"],
    "dataset": ["dataset_name"],
    "dataset_name": ["dataset"],
    "dataset_path": ["augmented_path", "output_path", "path"],
    "train_path": ["augmented_path", "dataset_path", "output_path", "path"],
    "max_steps": ["steps"],
    "steps": ["max_steps"],
}
CLARIFY_TEXT = ("I can help with the search service: its metrics and quality gates, training data and diagnosis, "
                "retraining and evaluation, or deployments (A/B, canary, promotion, rollback, scaling). "
                "What would you like me to do? No action was taken.")


class Turn(BaseModel):
    """What one agent sees at its turn, whatever the framework."""

    agent: str
    goal: str = ""
    tools: dict[str, dict] = Field(default_factory=dict)  # name -> JSON schema of its parameters
    delegation: Delegation | None = None
    outcomes: list[Outcome] = Field(default_factory=list)
    reports: list[Report] = Field(default_factory=list)
    resume: Resume | None = None
    delegate_tool: str | None = None  # supervisor: how to delegate ("transfer_to_{agent}" or crew's tool)


class Action(BaseModel):
    kind: Literal["tool", "delegate", "report", "final"]
    tool: str | None = None
    args: dict = Field(default_factory=dict)
    delegation: Delegation | None = None
    report: Report | None = None
    text: str = ""


def flatten_facts(outcomes: list[Outcome]) -> dict[str, Any]:
    """Scalar facts from executed results (later results win), plus gate statuses."""
    facts: dict[str, Any] = {}
    for o in outcomes:
        if not o.executed or o.error or not isinstance(o.result, dict):
            continue
        nested: dict[str, Any] = {}
        for k, v in o.result.items():
            if isinstance(v, dict):
                nested.update({k2: v2 for k2, v2 in v.items() if _scalar(v2)})
            elif _scalar(v):
                facts[k] = v
        for k, v in nested.items():
            facts.setdefault(k, v)
        if o.tool == "check_quality_gates":
            gates = o.result.get("gates") or []
            facts["gates_firing"] = list(o.result.get("firing") or [])
            facts["gates_all_ok"] = bool(gates) and all(g.get("status") == "ok" for g in gates)
    return facts


def _scalar(v: Any) -> bool:
    return isinstance(v, str | int | float | bool) and not (isinstance(v, str) and len(v) > 500)


def _coerce(value: Any, prop: dict) -> tuple[bool, Any]:
    """Fit a fact to a JSON-schema property; (False, None) when it does not fit."""
    if "anyOf" in prop:
        for option in prop["anyOf"]:
            if option.get("type") != "null":
                ok, v = _coerce(value, option)
                if ok:
                    return ok, v
        return False, None
    allowed = prop.get("enum") or ([prop["const"]] if "const" in prop else None)
    kind = prop.get("type")
    try:
        if kind == "integer":
            if isinstance(value, bool):
                return False, None
            value = int(float(value))
        elif kind == "number":
            if isinstance(value, bool):
                return False, None
            value = float(value)
        elif kind == "string":
            if isinstance(value, dict | list):
                return False, None
            value = str(value)
        elif kind == "boolean":
            if not isinstance(value, bool):
                return False, None
        elif kind in ("array", "object"):
            return False, None
    except (TypeError, ValueError):
        return False, None
    if allowed is not None and value not in allowed:
        return False, None
    if kind in ("integer", "number"):
        if "minimum" in prop and value < prop["minimum"]:
            return False, None
        if "maximum" in prop and value > prop["maximum"]:
            return False, None
    return True, value


def fill_args(schema: dict, *sources: dict) -> tuple[dict, list[str]]:
    """Arguments for a tool from fact dicts in priority order; returns (args, missing required fields)."""
    props = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    args: dict = {}
    for field, prop in props.items():
        for name in [field, *ALIASES.get(field, [])]:
            found = next((src[name] for src in sources if src.get(name) is not None), None)
            if found is None:
                continue
            ok, value = _coerce(found, prop)
            if ok:
                args[field] = value
                break
        if field not in args and field in required and "default" in prop:
            args[field] = prop["default"]  # strict schemas (CrewAI) list defaulted fields as required
    return args, sorted(required - set(args))


def _defaults(agent: str, tool: str, goal: str, facts: dict) -> dict:
    """Playbook defaults: the PromQL to read, the profile's canary weight, one more replica."""
    from autooptimizer.profiles import load_profile
    from autooptimizer.settings import get_settings

    env = facts.get("env") or get_settings().env
    out: dict[str, Any] = {"env": env}
    lowered = goal.lower()
    if tool == "query_metrics":
        if any(w in lowered for w in ("latency", "p95", "slow")):
            out["promql"] = f"histogram_quantile(0.95, sum(rate({m.REQUEST_SECONDS}_bucket[5m])) by (le))"
        elif any(w in lowered for w in ("cost", "budget", "spend")):
            out["promql"] = f"sum({m.COST_TOTAL})"
        elif "error" in lowered:
            out["promql"] = f"sum(rate({m.ERRORS_TOTAL}[5m]))"
        else:
            out["promql"] = f"sum(rate({m.FEEDBACK_NDCG}_sum[5m])) / sum(rate({m.FEEDBACK_NDCG}_count[5m]))"
    if tool in ("deploy_canary", "start_ab_test"):
        with contextlib.suppress(Exception):  # a missing profile leaves the tool's own default
            out["canary_weight"] = load_profile(env).ab_test.canary_weight
    if tool == "rollback_deployment":
        out["reason"] = f"requested by the operator's goal: {goal[:200]}"
    if tool == "switch_variant":
        out["rerank_depth"] = CHEAP_RERANK_DEPTH
    if tool == "scale_service":
        current = facts.get("replicas")
        out["replicas"] = int(current) + 1 if isinstance(current, int | float) else 2
    return out


class OfflinePlanner:
    """Decides the next action of one agent from its `Turn`. Stateless: everything comes from the turn."""

    def __init__(self, router: Any = None) -> None:
        self._router = router
        self.playbooks = load_playbooks()

    @property
    def router(self) -> Any:
        if self._router is None:
            from autooptimizer.agents.router import get_router

            self._router = get_router()
        return self._router

    def decide(self, turn: Turn) -> Action:
        if turn.agent == SUPERVISOR:
            return self._supervise(turn)
        return self._specialist(turn)

    # --- supervisor ----------------------------------------------------------------------------------------------
    def _supervise(self, turn: Turn) -> Action:
        route = self.router.route(turn.goal)
        if route.agent == CLARIFY:
            return Action(kind="final", text=CLARIFY_TEXT)
        plan = self.playbooks.plan(route.agent, turn.goal)
        facts: dict[str, Any] = {}
        latest = {r.agent: r for r in turn.reports}
        done: list[Report] = []
        for i, agent in enumerate(plan):
            report = latest.get(agent)
            if report is None:
                job = self.playbooks.job(agent, turn.goal).name if i == 0 else self.playbooks.default_job(agent).name
                return Action(kind="delegate", delegation=Delegation(agent=agent, goal=turn.goal, job=job,
                                                                     facts=facts))
            done.append(report)
            facts.update(report.facts)
            if report.status != "done":
                break
            if agent == "metrics" and len(plan) > 1 and report.facts.get("gates_all_ok"):
                return Action(kind="final", text=self._answer(route.agent, done, "All quality gates pass; "
                                                              "nothing needs fixing, so no change was made."))
        return Action(kind="final", text=self._answer(route.agent, done))

    @staticmethod
    def _answer(routed: str, reports: list[Report], tail: str = "") -> str:
        lines = [f"Routed to {routed}."]
        pending = [p for r in reports for p in r.pending_approvals]
        for r in reports:
            lines.append(f"- {r.agent} ({r.job}, {r.status}): {r.summary}")
        if pending:
            lines.append("Pending approvals: " + ", ".join(pending)
                         + " (answer with `autoopt approvals approve ID`, then `autoopt chat --resume ID`).")
        if tail:
            lines.append(tail)
        return "\n".join(lines)

    # --- specialists ---------------------------------------------------------------------------------------------
    def _specialist(self, turn: Turn) -> Action:
        goal = turn.delegation.goal if turn.delegation else turn.goal
        job = self.playbooks.job(turn.agent, goal, turn.delegation.job if turn.delegation else None)
        given = dict(turn.delegation.facts) if turn.delegation else {}
        asked = read_goal(goal).as_facts()
        skipped: list[str] = []
        for step in job.steps:
            if step not in turn.tools:
                skipped.append(step)
                continue
            mine = [o for o in turn.outcomes if o.tool == step]
            last = mine[-1] if mine else None
            if last is None:
                learned = flatten_facts(turn.outcomes)
                args, missing = fill_args(turn.tools[step], asked, learned, given,
                                          _defaults(turn.agent, step, goal, {**given, **learned}))
                if missing:
                    return self._report(turn, job.name, "needs_input",
                                        f"{step} needs {', '.join(missing)}; the goal and earlier results do not "
                                        "give them. Please say which value to use.")
                return Action(kind="tool", tool=step, args=args)
            if last.decision == "needs_approval":
                if turn.resume and turn.resume.approval_id == last.approval_id and len(mine) < MAX_ATTEMPTS:
                    if turn.resume.status == "approved":
                        return Action(kind="tool", tool=step, args=last.args)
                    return self._report(turn, job.name, "denied",
                                        f"{step} was not approved ({turn.resume.status}); it did not run.")
                return self._report(turn, job.name, "pending_approval",
                                    f"{step} needs approval: {last.reason}. Request {last.approval_id} is waiting.")
            if not last.executed:
                return self._report(turn, job.name, "denied", f"{step} was denied: {last.reason or last.error}. "
                                                              "It did not run.")
            if last.error:
                return self._report(turn, job.name, "error", f"{step} failed: {last.error}")
        note = f" (tools not available: {', '.join(skipped)})" if skipped else ""
        return self._report(turn, job.name, "done" if len(skipped) < len(job.steps) else "stopped",
                            self._summarise(turn.outcomes) + note)

    @staticmethod
    def _summarise(outcomes: list[Outcome]) -> str:
        parts = []
        for o in outcomes:
            if o.executed and not o.error:
                text = json.dumps(o.result, default=str)
                parts.append(f"{o.tool} ran: {text[:240]}")
        return "; ".join(parts) or "nothing ran"

    def _report(self, turn: Turn, job: str, status: str, summary: str) -> Action:
        pending = [o.approval_id for o in turn.outcomes if o.decision == "needs_approval" and o.approval_id]
        if status != "pending_approval":
            pending = []
        facts = {**(turn.delegation.facts if turn.delegation else {}), **flatten_facts(turn.outcomes)}
        calls = [{"tool": o.tool, "decision": o.decision, "executed": o.executed} for o in turn.outcomes]
        report = Report(agent=turn.agent, job=job, status=status, summary=summary, facts=facts,
                        pending_approvals=pending[-1:], calls=calls)
        return Action(kind="report", report=report)
