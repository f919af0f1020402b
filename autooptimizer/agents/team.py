"""The AutoGen team: a Swarm in which the supervisor delegates to the specialists by handoff and each
specialist hands its report back (or to the user, to pause for an approval).

Handoff tools carry a `message` argument, so a delegation or a report travels as the handoff message itself.
"""

from __future__ import annotations

from typing import Any

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.base import ChatAgent, Handoff
from autogen_agentchat.conditions import HandoffTermination, MaxMessageTermination, TextMessageTermination
from autogen_agentchat.teams import Swarm
from autogen_core.tools import BaseTool, FunctionTool

from autooptimizer.agents.specs import SPECIALISTS, SUPERVISOR, agent_specs
from autooptimizer.tools.adapters.autogen import RegistryWorkbench
from autooptimizer.tools.registry import ToolRegistry

USER = "user"
MAX_MESSAGES = 80
MAX_TOOL_STEPS = 12


class MessageHandoff(Handoff):
    """A handoff whose tool takes the message to pass on (the delegation, or the report)."""

    @property
    def handoff_tool(self) -> BaseTool[Any, Any]:
        def transfer(message: str) -> str:
            return message

        return FunctionTool(transfer, name=self.name, description=self.description, strict=True)


def build_team(model_client: Any, registry: ToolRegistry | None = None, max_messages: int = MAX_MESSAGES, *,
               scope: frozenset[str] | None = None) -> Swarm:
    """Supervisor first; it delegates with transfer_to_<agent>; specialists report with transfer_to_supervisor,
    or transfer_to_user to pause the run when a call waits for approval. `scope`: the tools the goal's intent
    allows (agents/intent.py); every workbench call carries it to the registry (None = unscoped)."""
    specs = agent_specs(registry)
    sup = specs[SUPERVISOR]
    participants: list[ChatAgent] = [AssistantAgent(
        SUPERVISOR, model_client=model_client, description=sup.description, system_message=sup.system_message(),
        handoffs=[MessageHandoff(target=a, description=f"Delegate to {a}: {specs[a].description}")
                  for a in SPECIALISTS],
    )]
    for name in SPECIALISTS:
        spec = specs[name]
        participants.append(AssistantAgent(
            name, model_client=model_client, description=spec.description, system_message=spec.system_message(),
            workbench=RegistryWorkbench(name, registry, scope=scope), max_tool_iterations=MAX_TOOL_STEPS,
            handoffs=[MessageHandoff(target=SUPERVISOR, description="Report your result to the supervisor."),
                      MessageHandoff(target=USER, description="Pause for a person: a call waits for approval.")],
        ))
    stop = HandoffTermination(target=USER) | MaxMessageTermination(max_messages)
    for p in participants:  # a text answer from any agent (not the user's task) ends the run
        stop = stop | TextMessageTermination(source=p.name)
    return Swarm(participants, termination_condition=stop)
