"""The playbooks (playbooks.yaml) as typed data: which job a specialist runs for a goal, its steps, and the
remediation chains. A `pipeline:` job's steps are the retrain pipeline's (ml/pipeline.py); the chains are the
supervisor's delegation per gate (loop/remedies.py), the table the loop's planner reads."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import BaseModel, Field, model_validator

from autooptimizer.loop.remedies import Gate, delegations
from autooptimizer.ml.pipeline import agent_steps

HERE = Path(__file__).parent


class Step(BaseModel):
    """One step of a job: the tool it calls, and the name its arguments builder and results go by."""

    name: str
    tool: str
    when: str | None = None  # a condition in agents/arguments.py; the step is skipped when it is false
    optional: bool = False  # evidence only: if the tool runs and fails, the job notes it and goes on

    @model_validator(mode="before")
    @classmethod
    def _from_yaml(cls, raw: object) -> object:
        if isinstance(raw, str):
            return {"name": raw, "tool": raw}
        if isinstance(raw, dict) and "step" in raw:
            return {"name": raw["step"], "tool": raw.get("tool", raw["step"]), "when": raw.get("when"),
                    "optional": raw.get("optional", False)}
        return raw


class Job(BaseModel):
    name: str
    steps: list[Step] = Field(default_factory=list)
    match: str | None = None
    default: bool = False
    pipeline: str | None = None  # an agent: the job's steps are its steps of the retrain pipeline
    gate: Gate | None = None  # metrics: the gate this job reads; a fix runs the gate's delegation after it

    @model_validator(mode="before")
    @classmethod
    def _pipeline_steps(cls, raw: object) -> object:
        if isinstance(raw, dict) and raw.get("pipeline") is not None:
            if raw.get("steps"):
                raise ValueError(f"job {raw.get('name')}: give either `steps` or `pipeline`, not both")
            steps = [Step(name=call.name, tool=step.tool or call.name, optional=step.optional)
                     for step, call in agent_steps(str(raw["pipeline"]))]
            if not steps:
                raise ValueError(f"job {raw.get('name')}: the retrain pipeline has no steps for {raw['pipeline']!r}")
            raw = {**raw, "steps": steps}
        return raw

    @model_validator(mode="after")
    def _has_steps(self) -> Job:
        if not self.steps:
            raise ValueError(f"job {self.name} has no steps (give `steps` or `pipeline`)")
        return self


def chains(metrics_jobs: list[Job]) -> dict[str, list[str]]:
    """The agents a fix runs after the metrics job that read its gate (agent, or agent:job): the gate's delegation
    in loop/remedies.py, the metrics agent itself already done."""
    return {job.name: ["metrics"] + [f"{d.agent}:{d.job}" if d.job else d.agent
                                     for d in delegations(job.gate) if d.agent != "metrics"]
            for job in metrics_jobs if job.gate is not None}


class Playbooks(BaseModel):
    intent: str
    chains: dict[str, list[str]]
    jobs: dict[str, list[Job]]

    def job(self, agent: str, goal: str, name: str | None = None) -> Job:
        """The named job, else the first whose keywords match the goal, else the agent's default job."""
        jobs = self.jobs[agent]
        if name:
            for j in jobs:
                if j.name == name:
                    return j
        for j in jobs:
            if j.match and re.search(j.match, goal, re.I):
                return j
        return next(j for j in jobs if j.default)

    def default_job(self, agent: str) -> Job:
        return next(j for j in self.jobs[agent] if j.default)

    def wants_fix(self, goal: str) -> bool:
        return re.search(self.intent, goal, re.I) is not None

    def plan(self, first: str, goal: str) -> list[tuple[str, str | None]]:
        """(agent, job) pairs to run: the routed agent (its job picked from the goal, job None), then, when the goal
        asks for a fix, the rest of the chain for the problem the metrics job reads."""
        if not self.wants_fix(goal):
            return [(first, None)]
        chain = self.chains.get(self.job("metrics", goal).name if first == "metrics" else "check", [])
        agents = [entry.split(":")[0] for entry in chain]
        if first not in agents:
            return [(first, None)]
        rest = chain[agents.index(first) + 1:]
        return [(first, None)] + [(a, j or None) for a, _, j in (e.partition(":") for e in rest)]

    def step_names(self) -> set[str]:
        return {s.name for jobs in self.jobs.values() for j in jobs for s in j.steps}

    def conditions(self) -> set[str]:
        return {s.when for jobs in self.jobs.values() for j in jobs for s in j.steps if s.when}


@lru_cache(maxsize=1)
def load_playbooks(path: str | None = None) -> Playbooks:
    raw = yaml.safe_load(Path(path or HERE / "playbooks.yaml").read_text())
    jobs = {a: [Job(**j) for j in js] for a, js in raw["jobs"].items()}
    return Playbooks(intent=raw["remediate"]["intent"], chains=chains(jobs.get("metrics", [])), jobs=jobs)
