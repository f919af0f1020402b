"""The playbooks (playbooks.yaml) as typed data: which job a specialist runs for a goal, and the remediation chain."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import BaseModel

HERE = Path(__file__).parent


class Job(BaseModel):
    name: str
    steps: list[str]
    match: str | None = None
    default: bool = False


class Playbooks(BaseModel):
    chain: list[str]
    intent: str
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

    def plan(self, first: str, goal: str) -> list[str]:
        """The agents to run: the routed one, then the rest of the remediation chain when the goal asks for a fix."""
        if first in self.chain and self.wants_fix(goal):
            return self.chain[self.chain.index(first):]
        return [first]


@lru_cache(maxsize=1)
def load_playbooks(path: str | None = None) -> Playbooks:
    raw = yaml.safe_load(Path(path or HERE / "playbooks.yaml").read_text())
    return Playbooks(chain=raw["remediate"]["chain"], intent=raw["remediate"]["intent"],
                     jobs={a: [Job(**j) for j in js] for a, js in raw["jobs"].items()})
