"""The offline planner: the built-in "model" used when no LLM is configured.

It is deterministic. The supervisor reads the operator's intent from the operator's own words (agents/intent.py:
quoted or embedded material is data; an override attempt is refused), routes those words with the offline router
and delegates along the playbook (only the routed agent for a question). A specialist runs its job's steps in order
(a question's steps that change state do not run), each step's arguments built explicitly for the real tool
(`agents/arguments.py`) from earlier results, the goal and the environment profile, and reports back. It reads
and writes only the framework-neutral `Turn`/`Action`; `autogen_client.py` and `crews/llm.py` translate to each
framework's model interface, so the real AutoGen and CrewAI machinery runs around it.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, Field

from autooptimizer.agents.arguments import Facts, MissingInput, StepContext, build_args, condition, learn
from autooptimizer.agents.goal import read_goal
from autooptimizer.agents.intent import Intent, asks_only, classify, split_goal
from autooptimizer.agents.playbooks import Job, load_playbooks
from autooptimizer.agents.protocol import Delegation, Outcome, Report, Resume, Status
from autooptimizer.agents.router import CLARIFY
from autooptimizer.agents.specs import SUPERVISOR

MAX_ATTEMPTS = 3
READ_ONLY_NOTE = "not run (it changes state, and this goal only asks a question)"
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


def complete_args(schema: dict, args: dict) -> tuple[dict, list[str]]:
    """Fill required fields that have a schema default (strict schemas, as CrewAI sends them, list defaulted
    fields as required); return the args and the required fields still missing."""
    props = schema.get("properties") or {}
    out = dict(args)
    for field in schema.get("required") or []:
        if field not in out and "default" in (props.get(field) or {}):
            out[field] = props[field]["default"]
    return out, sorted(set(schema.get("required") or []) - set(out))


def run_env() -> str:
    """The environment this conversation acts in: the run's (`--env`), else AUTOOPT_ENV. Never the goal's text."""
    from autooptimizer.settings import get_settings
    from autooptimizer.tools.adapters.common import current_run

    return current_run().env or get_settings().env


def offline_regression(facts: dict, env: str) -> str | None:
    """Why a freshly trained challenger must not be deployed: it scores below the champion on the same data by more
    than the profile's `promotion.originalTolerance`. None when it may go on to the canary and A/B test."""
    from autooptimizer.profiles import load_profile

    new, old = facts.get("challenger_ndcg10"), facts.get("champion_ndcg10")
    if not isinstance(new, int | float) or not isinstance(old, int | float):
        return None
    tolerance = load_profile(env).promotion.original_tolerance
    if new < old - tolerance:
        return (f"the challenger scores nDCG@10 {new:.4f} offline, below the champion's {old:.4f} by more than "
                f"{tolerance}; it was not deployed")
    return None


def _risk(tool: str) -> str:
    """The tool's risk in the policy catalogue; a tool missing there counts as a change."""
    from autooptimizer.policies.catalog import load_catalog

    entry = load_catalog().tools.get(tool)
    return entry.risk if entry else "change"


def _ignored_note(intent: Intent) -> list[str]:
    if not intent.ignored:
        return []
    return ["The quoted or embedded text holds instructions (" + "; ".join(intent.ignored)
            + "); it was read as data and not followed."]


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
        intent = classify(turn.goal, router=self.router, playbooks=self.playbooks)
        if intent.kind == "refused":
            return Action(kind="final", text=intent.reason)
        routed, words = intent.routed_to or CLARIFY, intent.operator_text
        if routed == CLARIFY:
            return Action(kind="final", text="\n".join([CLARIFY_TEXT, *_ignored_note(intent)]))
        plan = [(routed, None)] if intent.kind == "question" else self.playbooks.plan(routed, words)
        facts: dict[str, Any] = {}
        latest = {r.agent: r for r in turn.reports}
        done: list[Report] = []
        for i, (agent, job_name) in enumerate(plan):
            report = latest.get(agent)
            if report is None:
                job = (self.playbooks.job(agent, words) if i == 0
                       else self.playbooks.job(agent, "", job_name) if job_name else self.playbooks.default_job(agent))
                return Action(kind="delegate", delegation=Delegation(agent=agent, goal=turn.goal, job=job.name,
                                                                     facts=facts))
            done.append(report)
            facts.update(report.facts)
            if report.status != "done":
                break
            last = i == len(plan) - 1
            if agent == "metrics" and not last and report.facts.get("gates_all_ok"):
                return Action(kind="final", text=self._answer(intent, done, "All quality gates pass; "
                                                              "nothing needs fixing, so no change was made."))
            if agent == "ml" and not last and (why := offline_regression(facts, run_env())):
                return Action(kind="final", text=self._answer(intent, done, f"Stopped: {why}."))
        return Action(kind="final", text=self._answer(intent, done))

    @staticmethod
    def _answer(intent: Intent, reports: list[Report], tail: str = "") -> str:
        lines = [f"Routed to {intent.routed_to}."]
        pending = [p for r in reports for p in r.pending_approvals]
        for r in reports:
            lines.append(f"- {r.agent} ({r.job}, {r.status}): {r.summary}")
        if pending:
            lines.append("Pending approvals: " + ", ".join(pending)
                         + " (answer with `autoopt approvals approve ID`, then `autoopt chat --resume ID`).")
        if tail:
            lines.append(tail)
        if intent.kind == "question":
            lines.append("Read-only: the goal asks a question, so only read tools could run; nothing was changed.")
        return "\n".join(lines + _ignored_note(intent))

    # --- specialists ---------------------------------------------------------------------------------------------
    def _specialist(self, turn: Turn) -> Action:
        """Walk the job's steps over the outcomes so far (in order): the first step without a finished outcome is
        the next call; a denial, a pending approval or an error ends the job with a report."""
        split = split_goal(turn.delegation.goal if turn.delegation else turn.goal)
        readonly = asks_only(split.operator)  # a question: steps that change state do not run
        job = self.playbooks.job(turn.agent, split.operator, turn.delegation.job if turn.delegation else None)
        ctx = StepContext(goal_text=split.values, goal=read_goal(split.values), env=run_env(),
                          facts=Facts.lenient(turn.delegation.facts if turn.delegation else {}))
        outcomes, cursor = turn.outcomes, 0
        lines: list[str] = []
        skipped: list[str] = []
        for step in job.steps:
            if step.tool not in turn.tools:
                skipped.append(step.name)
                continue
            if step.when and not condition(step.when, ctx):
                lines.append(f"{step.name} skipped ({step.when} is false)")
                continue
            if readonly and _risk(step.tool) != "read":
                skipped.append(step.name)
                lines.append(f"{step.name} {READ_ONLY_NOTE}")
                continue
            mine: list[Outcome] = []  # this step's calls: retries after an approval, up to the one that ran
            while cursor < len(outcomes) and outcomes[cursor].tool == step.tool:
                mine.append(outcomes[cursor])
                cursor += 1
                if mine[-1].executed:
                    break
            if not mine:
                if cursor < len(outcomes):
                    return self._report(turn, ctx, job, "error", f"unexpected call {outcomes[cursor].tool} where "
                                        f"the playbook expected {step.tool}; stopping.")
                return self._next_call(turn, ctx, job, step.name, step.tool, lines)
            last = mine[-1]
            if last.decision == "needs_approval":
                if turn.resume and turn.resume.approval_id == last.approval_id and len(mine) < MAX_ATTEMPTS:
                    if turn.resume.status == "approved":
                        return Action(kind="tool", tool=step.tool, args=last.args)
                    return self._report(turn, ctx, job, "denied", f"{step.name} was not approved "
                                        f"({turn.resume.status}); it did not run.")
                return self._report(turn, ctx, job, "pending_approval",
                                    f"{step.name} needs approval: {last.reason}. Request {last.approval_id} is "
                                    "waiting.", lines)
            if not last.executed:
                return self._report(turn, ctx, job, "denied", f"{step.name} was denied: "
                                    f"{last.reason or last.error}. It did not run.", lines)
            if last.error and step.optional:
                lines.append(f"{step.name} failed ({last.error[:200]}); it only gathers evidence, so the job goes on")
                continue
            if last.error:
                return self._report(turn, ctx, job, "error", f"{step.name} failed: {last.error}", lines)
            learned = learn(step.name, last.result)
            ctx.facts = ctx.facts.model_copy(update=learned)
            lines.append(f"{step.name} ran" + (f": {json.dumps(learned, default=str)}" if learned else ""))
        missing = [s for s in skipped if f"{s} {READ_ONLY_NOTE}" not in lines]
        note = f" (tools not available: {', '.join(missing)})" if missing else ""
        return self._report(turn, ctx, job, "done" if len(skipped) < len(job.steps) else "stopped",
                            ("; ".join(lines) or "nothing ran") + note)

    def _next_call(self, turn: Turn, ctx: StepContext, job: Job, step: str, tool: str, lines: list[str]) -> Action:
        try:
            args = build_args(step, ctx)
        except MissingInput as exc:
            hint = exc.hint
            if any(line.endswith(READ_ONLY_NOTE) for line in lines):
                hint = (f"name it in the goal (a question runs read tools only; to let a change such as "
                        f"{', '.join(line.split(' ')[0] for line in lines if line.endswith(READ_ONLY_NOTE))} run, "
                        "ask for it in your own words)")
            return self._report(turn, ctx, job, "needs_input", f"{step} needs {exc.field}: {hint}. "
                                "Please say which value to use.", lines)
        args, missing = complete_args(turn.tools[tool], args)
        if missing:
            return self._report(turn, ctx, job, "needs_input",
                                f"{step} needs {', '.join(missing)}; the goal and earlier results do not give "
                                "them. Please say which value to use.", lines)
        return Action(kind="tool", tool=tool, args=args)

    @staticmethod
    def _report(turn: Turn, ctx: StepContext, job: Job, status: Status, summary: str,
                before: list[str] | None = None) -> Action:
        if before:
            summary = "; ".join(before) + "; " + summary
        pending = [o.approval_id for o in turn.outcomes if o.decision == "needs_approval" and o.approval_id]
        if status != "pending_approval":
            pending = []
        calls = [{"tool": o.tool, "decision": o.decision, "executed": o.executed} for o in turn.outcomes]
        report = Report(agent=turn.agent, job=job.name, status=status, summary=summary, facts=ctx.facts.public(),
                        pending_approvals=pending[-1:], calls=calls)
        return Action(kind="report", report=report)
