"""The traffic simulator: bounded, loopback-only replays of judged BEIR queries, with corpus shifts and faults."""

from autooptimizer.simulator.runner import SimStats, Simulator, clear_faults, inject_fault, simulate
from autooptimizer.simulator.scenario import FaultSpec, Scenario
from autooptimizer.simulator.workload import JudgedQuery, Workload, load_workload

__all__ = [
    "FaultSpec", "JudgedQuery", "Scenario", "SimStats", "Simulator", "Workload", "clear_faults", "inject_fault",
    "load_workload", "simulate",
]
