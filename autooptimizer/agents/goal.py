"""What a goal asks for, read as DATA: numbers and names the playbooks may use as tool arguments.

Nothing here can grant anything: the extracted values only fill arguments, and the PDP decides every call on
facts the registry computes itself. Phrases like "policy disabled" or "approved=true" are ignored.
"""

from __future__ import annotations

import re

from pydantic import BaseModel

KNOWN_DATASETS = ("scifact", "cran", "cisi", "med", "nfcorpus", "fiqa")
# "version 12", "version ltr-8eef9ab271" (a version token has a digit), or a stored version id on its own
_VERSION = re.compile(r"\b(?:version|ver\.?)\s*#?\s*((?=[\w.-]*\d)[A-Za-z0-9][\w.-]*[A-Za-z0-9]|\d)\b", re.I)
_VERSION_ID = re.compile(r"\b([a-z][a-z0-9]*-[0-9a-f]{10})\b")
_SHORT_VERSION = re.compile(r"\bv(\d{1,9})\b", re.I)
_DATASET_HASH = re.compile(r"\b([0-9a-f]{16})\b")
_REVISION = re.compile(r"\b(?:revision|commit)\s+([0-9a-f]{7,40})\b", re.I)
_CYCLE = re.compile(r"\b(si_\d{4}_\d{2}_\d{2}_\d{3,})\b")
_ALIAS = re.compile(r"\b(champion|challenger|gold)\b", re.I)
_TRAINER = {"cross_encoder": re.compile(r"\bcross[\s_-]?encoder\b", re.I),
            "bi_encoder": re.compile(r"\bbi[\s_-]?encoder\b", re.I),
            "ltr": re.compile(r"\b(ltr(?!-)|learning[\s-]to[\s-]rank)\b", re.I)}
_PERCENT = re.compile(r"\b(\d{1,3}(?:\.\d+)?)\s*%")
_WEIGHT = re.compile(r"\bweight\s*(?:of|=|:)?\s*(0?\.\d+|1(?:\.0+)?)\b", re.I)
_REPLICAS = re.compile(r"\b(\d{1,3})\s+(?:replicas?|workers?|instances?)\b", re.I)
_WORD_REPLICAS = re.compile(r"\b(one|two|three|four|five|six|seven|eight|nine|ten)\s+(?:replicas?|workers?)\b", re.I)
_STEPS = re.compile(r"\b(\d{1,6})\s+(?:training\s+)?steps?\b", re.I)
# a time budget, said as one ("a budget of 60 s", "within 5 minutes", "at most 90 seconds")
_SECONDS = re.compile(r"\b(?:budget\s+(?:of\s+)?|within\s+|at\s+most\s+|limit\s+(?:of\s+)?)(\d{1,5})\s*"
                      r"(s|secs?|seconds?|min|mins|minutes?)\b", re.I)
_SAMPLES = re.compile(r"\b(\d{1,6})\s+samples?\b", re.I)
_PATH = re.compile(r"(?<![\w/])((?:/|\./|~/)[\w.~/-]+)")
_DEPTH = re.compile(r"\bdepth\s*(?:of|=|:|to)?\s*(\d{1,4})\b", re.I)
_ENV = re.compile(r"\b(dev|staging|prod)\b", re.I)
_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10}


class GoalFacts(BaseModel):
    """Argument values a goal explicitly asks for (all optional)."""

    model_version: str | None = None
    alias: str | None = None
    dataset: str | None = None  # a dataset name under AUTOOPT_DATA_DIR (scifact, cran, ...)
    dataset_hash: str | None = None  # a built training dataset (16 hex digits)
    path: str | None = None
    trainer: str | None = None
    canary_weight: float | None = None
    replicas: int | None = None
    steps: int | None = None
    seconds: float | None = None
    samples: int | None = None
    rerank_depth: int | None = None
    revision: str | None = None
    cycle_id: str | None = None
    env: str | None = None


def read_goal(goal: str) -> GoalFacts:
    text = goal[:4000]
    facts = GoalFacts()
    if m := (_VERSION.search(text) or _VERSION_ID.search(text) or _SHORT_VERSION.search(text)):
        facts.model_version = m.group(1)
    if m := _ALIAS.search(text):
        facts.alias = m.group(1).lower()
    if m := _DATASET_HASH.search(text):
        facts.dataset_hash = m.group(1)
    if m := _REVISION.search(text):
        facts.revision = m.group(1)
    if m := _CYCLE.search(text):
        facts.cycle_id = m.group(1)
    facts.trainer = next((name for name, rx in _TRAINER.items() if rx.search(text)), None)
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
    if m := _SECONDS.search(text):
        facts.seconds = float(m.group(1)) * (60 if m.group(2).lower().startswith("m") else 1)
    if m := _SAMPLES.search(text):
        facts.samples = int(m.group(1))
    if m := _PATH.search(text):
        facts.path = m.group(1).rstrip(".")
    if m := _DEPTH.search(text):
        facts.rerank_depth = int(m.group(1))
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
