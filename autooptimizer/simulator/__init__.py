"""The traffic simulator: bounded, loopback-only replays of judged BEIR queries, with corpus shifts and faults."""

from autooptimizer.simulator.runner import (
    RequestResult,
    SimStats,
    Simulator,
    clear_faults,
    inject_fault,
    mix_slots,
    simulate,
)
from autooptimizer.simulator.scenario import FaultSpec, Scenario
from autooptimizer.simulator.workload import JudgedQuery, Workload, load_workload

__all__ = [
    "FaultSpec", "JudgedQuery", "RequestResult", "Scenario", "SimStats", "Simulator", "Workload", "clear_faults",
    "inject_fault", "load_workload", "mix_slots", "simulate",
]
