"""The facts the PDP decides on, defined once: what a tool may supply (`ToolFacts`) and the whole policy context
(`PolicyContext` = the tool's facts + what only the registry sets: the kill switch, an approval for this exact call,
and whether the tool is in the run's scope).

Both models are strict and forbid extra keys: a misspelt or unknown fact, a bool given as 1, a NaN or an infinite
number is a validation error, which the registry turns into a deny. Booleans default to false and numbers to
absent, so a fact left out can never read as true. The Cedar schema (`cedar/schema.cedarschema`) lists the same
keys; `tests/test_pdp.py` checks the two agree. Numbers go to Cedar as `decimal` (4 places), rounded towards the
safe side: `canary_weight` and `estimated_cost` are compared against upper bounds, so they round up;
`budget_remaining` rounds down.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

_ROUND_UP = {"canary_weight", "estimated_cost"}
_DECIMAL_LIMIT = 9e14


class ToolFacts(BaseModel):
    """Trusted facts a tool's `facts(args, ctx)` computes from typed args and stored state (never from free text)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    ab_passed: bool = Field(False, description="the A/B judge's own recent verdict for this version is pass")
    target_checked: bool = Field(False, description="every protected-object fact below was read")
    target_is_gold: bool = Field(False, description="the target is a gold baseline (set_model_alias: alias gold)")
    target_is_champion: bool = Field(False, description="the champion alias points at the target")
    target_is_serving: bool = Field(False, description="git's desired state serves the target (any env)")
    target_is_canary: bool = Field(False, description="git's desired state runs the target as a canary (any env)")
    target_is_safe_point: bool = Field(False, description="a running cycle's safe point would restore the target")
    target_in_rollback_window: bool = Field(False, description="the target is in the last loop.rollbackDepth deploys")
    alias_consistent: bool = Field(False, description="the alias move keeps the registry in step with git")
    prune_touches_protected: bool = Field(False, description="prune_storage's plan would delete a protected object")
    canary_weight: float | None = Field(None, description="traffic share the canary would get (0..1)")
    budget_remaining: float | None = Field(None, description="budget left, in dollars; absent when unknown")
    estimated_cost: float | None = Field(None, description="estimated cost of the training run, in dollars")


class PolicyContext(ToolFacts):
    """Everything the PDP may use. Built only by the registry (or an operator's what-if check), never by an agent."""

    kill_switch: bool = Field(False, description="the operator kill switch is on (an unreadable file reads as on)")
    approved: bool = Field(False, description="a human approved THIS exact call (tool + args + agent + env)")
    in_scope: bool = Field(False, description="the tool is among those the run's intent allows (registry-set)")

    def to_cedar(self) -> dict[str, Any]:
        """The Cedar request context: booleans as they are, numbers as rounded `decimal` extension values."""
        out: dict[str, Any] = {}
        for key, value in self.model_dump().items():
            if isinstance(value, bool):
                out[key] = value
            elif value is not None:
                if abs(value) >= _DECIMAL_LIMIT:
                    raise ValueError(f"context {key}={value} is outside the range the policies accept")
                q = Decimal(repr(float(value))).quantize(
                    Decimal("0.0001"), rounding=ROUND_CEILING if key in _ROUND_UP else ROUND_FLOOR)
                out[key] = {"__extn": {"fn": "decimal", "arg": f"{q:.4f}"}}
        return out


TOOL_FACT_KEYS = tuple(ToolFacts.model_fields)
CONTEXT_KEYS = tuple(PolicyContext.model_fields)
