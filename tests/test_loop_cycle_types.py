"""The typed cycle state serialises to the journal summary as the untyped dict did: only what a path set, as JSON."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from autooptimizer.loop.cycle_types import CycleOptions, CycleState, Decision


def test_summary_holds_only_what_was_set_as_json() -> None:
    opts = CycleOptions(trigger="cli", gate="p95_latency", act_on=["p95_latency"])
    state = CycleState(options=opts)
    assert state.summary() == {"options": json.loads(json.dumps(opts.model_dump())), "decisions": []}
    state.gate = None  # set, even to None: it is in the summary (no gate fired)
    state.decisions.append(Decision(agent="devops", tool="scale_service", decision="permit", policies=["p"],
                                    executed=True))
    state.action = {"revision": "abc", "replicas": 2}
    state.watch = {"detected_at": 1.5, "reasons": ["x"]}
    state.outcome, state.reason, state.duration_seconds = "scaled", "replicas 1 -> 2", 0.25
    assert state.summary() == {
        "options": opts.model_dump(), "gate": None,
        "decisions": [{"agent": "devops", "tool": "scale_service", "decision": "permit", "policies": ["p"],
                       "executed": True, "approval_id": None}],
        "action": {"revision": "abc", "replicas": 2}, "watch": {"detected_at": 1.5, "reasons": ["x"]},
        "outcome": "scaled", "reason": "replicas 1 -> 2", "duration_seconds": 0.25}


def test_an_unknown_field_is_refused() -> None:
    with pytest.raises(ValidationError):
        CycleState(options=CycleOptions(), nonsense=1)  # type: ignore[call-arg]
