"""The CrewAI optimization crew: a hierarchical process with the supervisor as manager and the four specialists
as workers, each with exactly its own registry tools (every call goes through the PDP).

    from autooptimizer.crews import optimization_crew
    out = optimization_crew().kickoff(inputs={"goal": "NDCG dropped, fix the reranker"})
    print(out.raw)

Each kickoff is one trace; the run's tool calls, pending approvals and trace id are on `crew.last_run`.
Importing crewai takes ~5 s, so this module imports it only when a crew is built.
"""

from __future__ import annotations

from typing import Any


def optimization_crew(*, registry: Any = None, llm: Any = None, env: str | None = None,
                      approvals: tuple[str, ...] | list[str] = (), verbose: bool = False) -> Any:
    """Build the crew. `approvals`: approval ids granted for this run (each still covers only its exact call)."""
    from autooptimizer.crews.crew import build_crew

    return build_crew(registry=registry, llm=llm, env=env, approvals=tuple(approvals), verbose=verbose)


__all__ = ["optimization_crew"]
