"""Builds the hierarchical crew and wraps `kickoff` so every kickoff is one trace with a run record.

Each kickoff first reads the goal's intent from the operator's own words (agents/intent.py): an override attempt is
refused (audited; the crew does not run); otherwise the intent's allowed tools are the kickoff's scope, which every
tool call carries to the registry (the tools are built once, so the scope travels in the kickoff's RunContext).
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, Field


class CrewRun(BaseModel):
    """What the last kickoff did (the crew's own output is the text answer)."""

    answer: str = ""
    tool_calls: list[dict] = Field(default_factory=list)
    pending_approvals: list[str] = Field(default_factory=list)
    trace_id: str = ""
    status: str = "completed"  # completed | refused | budget_exceeded | error
    intent: str = ""  # question | action | refused
    allowed_tools: list[str] = Field(default_factory=list)
    stop_kind: str | None = None  # budget_exceeded: the budget's profile key; error: the error's kind
    reason: str = ""  # why the kickoff stopped early (refused / budget_exceeded / error), and what to do
    usage: dict = Field(default_factory=dict)  # turns, tool calls, tokens, wall time (agents/budgets.RunUsage)


def _crewai_env() -> None:
    """No telemetry, no tracing prompts, storage under AUTOOPT_HOME (a fresh HOME otherwise stalls ~5 s/agent)."""
    from autooptimizer.settings import apply_offline_env, get_settings

    apply_offline_env()
    os.environ.setdefault("CREWAI_STORAGE_DIR", str(get_settings().path("crewai", ".keep").parent))
    os.environ.setdefault("CREWAI_TRACING_ENABLED", "false")
    os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("OTEL_SDK_DISABLED", "false")


def build_crew(*, registry: Any, llm: Any, env: str | None, approvals: tuple[str, ...], verbose: bool) -> Any:
    _crewai_env()
    from crewai import Agent, Crew, Process, Task
    from pydantic import PrivateAttr

    from autooptimizer.agents.llm import crewai_llm
    from autooptimizer.agents.protocol import wrap_goal
    from autooptimizer.agents.specs import SPECIALISTS, SUPERVISOR, agent_specs
    from autooptimizer.crews.budgeted_llm import BudgetedCrewLLM
    from autooptimizer.crews.llm import PlannerLLM
    from autooptimizer.tools.adapters.crewai import crewai_tools

    specs = agent_specs(registry)
    inner = llm or crewai_llm()
    if isinstance(inner, PlannerLLM):
        inner.roles = {specs[n].role: n for n in specs}
    llm = BudgetedCrewLLM.wrap(inner, remote=not isinstance(inner, PlannerLLM))  # each kickoff gets a RunBudget

    class TracedAgent(Agent):
        """An agent whose every task execution is an `agent` span in the kickoff's trace."""

        def execute_task(self, task: Any, context: str | None = None, tools: list | None = None) -> Any:
            from autooptimizer.tracing import span

            name = next((n for n in specs if specs[n].role == self.role), self.role)
            with span(f"agent:{name}", kind="agent", inputs={"task": task.description[:500]}) as sp:
                out = super().execute_task(task, context=context, tools=tools)
                sp.set_outputs({"answer": str(out)[:2000]})
                return out

    def agent(name: str, **kw: Any) -> Any:
        s = specs[name]
        return TracedAgent(role=s.role, goal=s.description, backstory=s.system_message(), llm=llm, cache=False,
                           verbose=verbose, max_iter=15, **kw)

    manager = agent(SUPERVISOR, allow_delegation=True)
    workers = [agent(n, tools=crewai_tools(n, registry), allow_delegation=False) for n in SPECIALISTS]
    task = Task(description=wrap_goal("{goal}") + "\n\nDelegate the goal to the right specialist(s) and answer "
                "with what ran, what was denied and which approvals are pending.",
                expected_output="A short answer: what ran, what was denied, pending approvals.")

    class OptimizationCrew(Crew):
        _autoopt: dict = PrivateAttr(default_factory=dict)

        @property
        def last_run(self) -> CrewRun:
            return self._autoopt.get("last_run", CrewRun())

        def kickoff(self, inputs: dict[str, Any] | None = None, **kw: Any) -> Any:
            from crewai.crews.crew_output import CrewOutput

            from autooptimizer.agents.budgeted_client import explain_error
            from autooptimizer.agents.budgets import audit_stop, run_budget
            from autooptimizer.agents.intent import audit_intent, classify
            from autooptimizer.policies.approvals import ApprovalStore
            from autooptimizer.settings import get_settings
            from autooptimizer.tools.adapters.common import RunContext, run_scope
            from autooptimizer.tracing import start_trace

            goal = str((inputs or {}).get("goal", ""))
            intent = classify(goal)
            run_env = env or get_settings().env
            budget = run_budget(run_env)
            llm.start_run(budget)
            ctx = RunContext(env=run_env, goal=goal, granted=set(approvals), scope=intent.scope, budget=budget)
            meta = {"goal": goal[:500], "env": ctx.env, "process": "hierarchical", "intent": intent.kind}
            if intent.kind == "refused":
                with start_trace("crew.kickoff", meta, inputs={"goal": goal}) as tr:
                    audit_intent(intent, goal, ctx.env or "", kind="refusal", trace_id=tr.trace_id)
                    tr.set_outputs({"answer": intent.reason})
                self._autoopt["last_run"] = CrewRun(answer=intent.reason, trace_id=tr.trace_id, status="refused",
                                                    intent="refused", reason=intent.reason)
                return CrewOutput(raw=intent.reason)
            with start_trace("crew.kickoff", meta, inputs={"goal": goal}) as tr, run_scope(ctx):
                if intent.ignored:
                    audit_intent(intent, goal, ctx.env or "", kind="quarantine", trace_id=tr.trace_id)
                try:
                    out = super().kickoff(inputs=inputs, **kw)
                except Exception as exc:  # noqa: BLE001 - a failed kickoff is an answer (status error)
                    if budget.stop is None:
                        budget.fail(explain_error(exc, get_settings().llm_base_url))
                    out = None
                stop = budget.stop
                if stop is not None:
                    audit_stop(stop, env=ctx.env or "", goal=goal, run_id=None, trace_id=tr.trace_id,
                               usage=budget.snapshot())
                    out = CrewOutput(raw=f"Run stopped ({stop.status}: {stop.kind}). {stop.reason}")
                tr.set_outputs({"answer": str(getattr(out, "raw", out))[:4000]})
            store = ApprovalStore()
            pending = sorted({c.approval_id for c in ctx.calls if c.decision == "needs_approval" and c.approval_id
                              and store.get(c.approval_id).status == "pending"})
            self._autoopt["last_run"] = CrewRun(
                answer=str(getattr(out, "raw", out)), trace_id=tr.trace_id, pending_approvals=pending,
                intent=intent.kind, allowed_tools=intent.allowed_tools,
                status=stop.status if stop else "completed", stop_kind=stop.kind if stop else None,
                reason=stop.reason if stop else "", usage=budget.snapshot().model_dump(),
                tool_calls=[c.model_dump(include={"agent", "tool", "args", "decision", "executed", "approval_id"})
                            for c in ctx.calls])
            return out

    return OptimizationCrew(agents=workers, tasks=[task], process=Process.hierarchical, manager_agent=manager,
                            memory=False, verbose=verbose)
