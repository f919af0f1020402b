"""What a tool is and what a call returns: `ToolSpec` (defined once, wrapped by every framework adapter),
`ToolCallResult` and the `ToolEvent` listeners receive."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Literal, get_type_hints

from pydantic import BaseModel, ConfigDict

from autooptimizer.errors import ConfigError

Risk = Literal["read", "change", "critical"]
DecisionKind = Literal["permit", "deny", "needs_approval"]
# (args, ctx) -> result; (args, ctx) -> the tool's policy facts (see policies/facts.py: ToolFacts)
ToolFunc = Callable[[Any, Any], Any]
FactsFunc = Callable[[Any, Any], dict[str, Any]]


class ToolSpec(BaseModel):
    """One tool, defined once; the framework adapters wrap this, never the bare function."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str
    description: str
    risk: Risk
    owner: str
    args_model: type[BaseModel]
    func: ToolFunc
    facts: FactsFunc | None = None

    def json_schema(self) -> dict[str, Any]:
        """The args JSON schema, for LLM function-calling adapters."""
        return self.args_model.model_json_schema()


class ToolCallResult(BaseModel):
    """What happened to one call: the decision, and the result only when the tool actually ran."""

    tool: str
    agent: str
    args: dict[str, Any]
    decision: DecisionKind
    policies: list[str]
    reason: str
    executed: bool
    result: Any = None
    error: str | None = None
    approval_id: str | None = None
    trace_id: str | None = None
    cycle_id: str | None = None
    env: str | None = None

    @property
    def ok(self) -> bool:
        return self.executed and self.error is None


class ToolEvent(BaseModel):
    """Sent to listeners: phase "decision" for every call, then "result" when the tool ran."""

    phase: Literal["decision", "result"]
    call: ToolCallResult
    context: dict[str, Any]
    started_at: float
    duration_ms: float


Listener = Callable[[ToolEvent], None]


def args_model_of(func: Callable[..., Any]) -> type[BaseModel]:
    """The pydantic args model of `def f(args: SomeArgs, ctx: ToolContext)`; a clear error for any other shape."""
    params = list(inspect.signature(func).parameters.values())
    if len(params) != 2:
        raise ConfigError(f"Tool function {func.__qualname__} must take (args, ctx): its args model and the call's "
                          "ToolContext.", "Define `def f(args: SomeArgs, ctx: ToolContext) -> dict`.")
    model = get_type_hints(func).get(params[0].name)
    if not (inspect.isclass(model) and issubclass(model, BaseModel)):
        raise ConfigError(f"Tool function {func.__qualname__}: argument {params[0].name!r} is not typed with a "
                          "pydantic model.", "Annotate it, e.g. `args: DeployCanaryArgs`.")
    return model


def first_doc_line(func: Callable[..., Any]) -> str:
    doc = inspect.getdoc(func) or ""
    return doc.strip().split("\n\n")[0].replace("\n", " ")
