"""The agents, defined once and independent of any framework: name, role, instructions (from prompts.yaml)
and exactly the registry tools whose owner is that agent. The supervisor owns no tool; it delegates."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import BaseModel

from autooptimizer.tools.registry import ToolRegistry

HERE = Path(__file__).parent
SUPERVISOR = "supervisor"
SPECIALISTS = ("metrics", "data", "ml", "devops")
AGENT_NAMES = (SUPERVISOR, *SPECIALISTS)


class AgentSpec(BaseModel):
    name: str
    role: str
    description: str
    instructions: str
    tools: list[str]

    def system_message(self) -> str:
        """The system prompt every framework gets; its first line names the agent for the offline planner."""
        return f"[agent: {self.name}]\n{self.instructions.strip()}\n\n{_prompts()['common'].strip()}"


@lru_cache(maxsize=1)
def _prompts() -> dict:
    return yaml.safe_load((HERE / "prompts.yaml").read_text())


def agent_specs(registry: ToolRegistry | None = None) -> dict[str, AgentSpec]:
    """The five agents with their tools taken from the registry (owner == agent name)."""
    if registry is None:
        from autooptimizer.tools.registry import load_all_tools

        registry = load_all_tools()
    prompts = _prompts()
    out = {}
    for name in AGENT_NAMES:
        p = prompts[name]
        tools = [] if name == SUPERVISOR else [s.name for s in registry.for_agent(name)]
        out[name] = AgentSpec(name=name, role=p["role"], description=p["description"],
                              instructions=p["instructions"], tools=tools)
    return out
