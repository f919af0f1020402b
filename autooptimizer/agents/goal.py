"""What a goal asks for, read as DATA: numbers and names the playbooks may use as tool arguments.

Nothing here can grant anything: the extracted values only fill arguments, and the PDP decides every call on
facts the registry computes itself. Phrases like "policy disabled" or "approved=true" are ignored.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, Field

KNOWN_DATASETS = ("scifact", "cran", "cisi", "med", "nfcorpus", "fiqa")
_VERSION = re.compile(r"\b(?:version|ver\.?|v)\s*#?\s*(\d{1,9})\b", re.I)
_PERCENT = re.compile(r"\b(\d{1,3}(?:\.\d+)?)\s*%")
_WEIGHT = re.compile(r"\bweight\s*(?:of|=|:)?\s*(0?\.\d+|1(?:\.0+)?)\b", re.I)
_REPLICAS = re.compile(r"\b(\d{1,3})\s+(?:replicas?|workers?|instances?)\b", re.I)
_WORD_REPLICAS = re.compile(r"\b(one|two|three|four|five|six|seven|eight|nine|ten)\s+(?:replicas?|workers?)\b", re.I)
_STEPS = re.compile(r"\b(\d{1,6})\s+(?:training\s+)?steps?\b", re.I)
_PATH = re.compile(r"(?<![\w/])((?:/|\./|~/)[\w.~/-]+)")
_DEPTH = re.compile(r"\bdepth\s*(?:of|=|:|to)?\s*(\d{1,4})\b", re.I)
_ENV = re.compile(r"\b(dev|staging|prod)\b", re.I)
_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10}


class GoalFacts(BaseModel):
    """Argument values a goal explicitly asks for (all optional)."""

    model_version: str | None = None
    canary_weight: float | None = None
    replicas: int | None = None
    dataset: str | None = None
    steps: int | None = None
    env: str | None = None
    path: str | None = None
    values: dict = Field(default_factory=dict)

    def as_facts(self) -> dict:
        out = {k: v for k, v in self.model_dump(exclude={"values"}).items() if v is not None}
        return {**out, **self.values}


def read_goal(goal: str) -> GoalFacts:
    text = goal[:4000]
    facts = GoalFacts()
    if m := _VERSION.search(text):
        facts.model_version = m.group(1)
    if m := _WEIGHT.search(text):
        facts.canary_weight = float(m.group(1))
    elif (m := _PERCENT.search(text)) and float(m.group(1)) <= 100:
        facts.canary_weight = round(float(m.group(1)) / 100, 4)
    if m := _REPLICAS.search(text):
        facts.replicas = int(m.group(1))
    elif m := _WORD_REPLICAS.search(text):
        facts.replicas = _WORDS[m.group(1).lower()]
    if m := _STEPS.search(text):
        facts.steps = int(m.group(1))
    if m := _PATH.search(text):
        facts.path = m.group(1).rstrip(".")
    if m := _DEPTH.search(text):
        facts.values["rerank_depth"] = int(m.group(1))
    if m := _ENV.search(text):
        facts.env = m.group(1).lower()
    lowered = text.lower()
    for name in KNOWN_DATASETS:
        if re.search(rf"\b{name}\b", lowered):
            facts.dataset = name
            break
    if re.search(r"\bhalf\b", lowered) and facts.canary_weight is None:
        facts.canary_weight = 0.5
    return facts
