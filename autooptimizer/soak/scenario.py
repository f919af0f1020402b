"""A soak scenario: a YAML timeline of traffic phases and events in simulated time, validated before anything starts.

```yaml
name: month
speed: 720                 # simulated seconds per wall-clock second (`autoopt soak --speed` overrides)
schedule_every: 9h         # the scheduler's interval cycle, in simulated time (loop.intervalMinutes = this / speed)
original: scifact          # the domain the champion was trained on (held to "not regressed" at the end)
phases:                    # back to back from t=0: each sets the query mix and the rate
  - {name: healthy, duration: 2d, rate: 8, mix: {scifact: 1}}
events:                    # at a simulated time from the start
  - {at: 2d, kind: shift, to: cran}
  - {at: 3d, kind: latency_spike, duration: 12h, latency_ms: 1500}
```

Durations are seconds or a number with a unit: `s`, `m`, `h`, `d` (`90m`, `2d`, `1.5h`). Rates are requests per
wall-clock second: the service's real load on this machine (compressing time compresses the calendar, not the CPU).
Every dataset is a BEIR folder under AUTOOPT_DATA_DIR (or a path); the loader checks each exists.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from autooptimizer.errors import ConfigError, InputError

SCENARIO_DIR = Path(__file__).parent / "scenarios"
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([smhd]?)\s*$")


def parse_duration(value: Any) -> float:
    """Seconds from `90`, `90s`, `15m`, `9h` or `2d` (simulated time)."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '90m', '9h', '2d', not a boolean")
    if isinstance(value, int | float):
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a duration: write seconds (3600) or a number with s, m, h or d ('6h')")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]
PositiveDuration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _mix(value: Any) -> dict[str, float]:
    """`cran` or `{cran: 0.7, med: 0.3}` -> weights."""
    if isinstance(value, str):
        return {value: 1.0}
    return value


Mix = Annotated[dict[str, Annotated[float, Field(ge=0)]], BeforeValidator(_mix), Field(min_length=1)]


class Phase(_Strict):
    name: str = Field(min_length=1, max_length=60)
    duration: PositiveDuration
    rate: float = Field(gt=0, le=200, description="requests per wall-clock second")
    mix: Mix | None = Field(default=None, description="dataset -> weight (or one dataset name); a later phase "
                                                    "without one keeps the mix it finds (shifts included)")


class _Event(_Strict):
    at: Duration = Field(description="simulated time from the start")


class Shift(_Event):
    """A corpus shift: the query mix moves to a dataset, or a mix, it has not served before."""

    kind: Literal["shift"]
    to: Mix


class Return(_Event):
    """A return to an earlier domain: the mix moves back to a dataset served before."""

    kind: Literal["return"]
    to: Mix


class LatencySpike(_Event):
    kind: Literal["latency_spike"]
    duration: PositiveDuration
    latency_ms: float = Field(default=1500.0, gt=0, le=10_000)


class ErrorBurst(_Event):
    kind: Literal["error_burst"]
    duration: PositiveDuration
    error_rate: float = Field(default=0.5, gt=0, le=1.0)


class CostOverrun(_Event):
    kind: Literal["cost_overrun"]
    duration: PositiveDuration
    multiplier: float = Field(default=50.0, gt=1, le=10_000)


class ServiceRestart(_Event):
    """The search service process is stopped and started again from git's desired state (as a pod restart)."""

    kind: Literal["service_restart"]


class BadModel(_Event):
    """An operator commits a bad model version to GitOps (an untrained cross-encoder head, ranking at random)."""

    kind: Literal["bad_model"]
    version: str = Field(default="bad-untrained-cross-encoder", min_length=1, max_length=100)


class KillSwitch(_Event):
    """An operator turns the kill switch on, and off again `duration` later (through the optimizer's API)."""

    kind: Literal["kill_switch"]
    duration: PositiveDuration


class OptimizerKill(_Event):
    """SIGKILL of the optimizer service (`autoopt serve`); its supervisor must bring it back."""

    kind: Literal["optimizer_kill"]


Event = Annotated[Shift | Return | LatencySpike | ErrorBurst | CostOverrun | ServiceRestart | BadModel | KillSwitch
                  | OptimizerKill, Field(discriminator="kind")]
FAULT_KINDS = ("latency_spike", "error_burst", "cost_overrun", "service_restart", "bad_model", "kill_switch",
               "optimizer_kill")


class Scenario(_Strict):
    name: str = Field(min_length=1, max_length=60)
    description: str = ""
    speed: float = Field(default=720.0, gt=0, le=1_000_000, description="simulated seconds per wall-clock second")
    schedule_every: PositiveDuration = Field(description="the scheduler's interval cycle, in simulated time")
    original: str = Field(min_length=1, description="the domain the starting champion was trained on")
    max_queries: int | None = Field(default=None, ge=1, description="replay at most this many queries per dataset")
    seed: int = Field(default=0, description="the query order, and the feedback/held-out split (the cycles' seed)")
    phases: list[Phase] = Field(min_length=1)
    events: list[Event] = Field(default_factory=list)

    @model_validator(mode="after")
    def _timeline(self) -> Scenario:
        if self.phases[0].mix is None:
            raise ValueError("phases[0] needs a mix: the traffic must start somewhere (e.g. `mix: scifact`)")
        end = self.duration
        for i, ev in enumerate(self.events):
            if ev.at >= end:
                raise ValueError(f"events[{i}] ({ev.kind}) is at {ev.at:g} s, at or after the end of the phases "
                                 f"({end:g} s): move it earlier or lengthen a phase")
        seen: set[str] = set()
        for t, kind, mix in self._mix_changes():
            names = set(mix)
            if kind == "return" and not names <= seen:
                raise ValueError(f"the return at {t:g} s goes to {sorted(names - seen)}, never served before: a "
                                 "return goes back to an earlier domain (use `kind: shift` for a new one)")
            if kind == "shift" and names <= seen:
                raise ValueError(f"the shift at {t:g} s goes to {sorted(names)}, all served before: use "
                                 "`kind: return` to go back to an earlier domain")
            seen |= names
        return self

    # -- derived ---------------------------------------------------------------------------------------------------
    @property
    def duration(self) -> float:
        """Simulated seconds, the sum of the phases."""
        return sum(p.duration for p in self.phases)

    def phase_starts(self) -> list[float]:
        out, t = [], 0.0
        for p in self.phases:
            out.append(t)
            t += p.duration
        return out

    def _mix_changes(self) -> list[tuple[float, str, dict[str, float]]]:
        """(simulated time, 'phase'|'shift'|'return', mix) in time order; at the same time a phase comes first."""
        rows: list[tuple[float, int, str, dict[str, float]]] = [
            (t, 0, "phase", p.mix) for t, p in zip(self.phase_starts(), self.phases, strict=True) if p.mix]
        rows += [(e.at, 1, e.kind, e.to) for e in self.events if isinstance(e, Shift | Return)]
        return [(t, kind, mix) for t, _, kind, mix in sorted(rows, key=lambda r: (r[0], r[1]))]

    def datasets(self) -> list[str]:
        """Every dataset the timeline serves, the original first."""
        names = [self.original]
        for _, _, mix in self._mix_changes():
            names += list(mix)
        return list(dict.fromkeys(names))

    def scheduled_cycles(self) -> int:
        """Interval cycles the scheduler is due to start over the timeline (a busy lock may skip some)."""
        return int(self.duration // self.schedule_every)

    def wall_seconds(self, speed: float | None = None) -> float:
        return self.duration / (speed or self.speed)

    def counts(self) -> dict[str, int]:
        """Events per kind (shifts, returns, each fault)."""
        out: dict[str, int] = {}
        for e in self.events:
            out[e.kind] = out.get(e.kind, 0) + 1
        return out


def _field_path(loc: tuple[Any, ...], data: Any) -> str:
    """`phases[2].mix` from pydantic's location, naming the event kind where the union adds it."""
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif item in {"shift", "return", *FAULT_KINDS} and parts and parts[-1].endswith("]"):
            continue  # the discriminated union's tag: the event's own `kind` says it
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "(top level)"


def _problems(exc: ValidationError, data: Any) -> list[str]:
    out = []
    for err in exc.errors():
        where = _field_path(tuple(err["loc"]), data)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (a typo?)"
        elif err["type"] == "union_tag_invalid":
            msg = f"unknown event kind; use one of shift, return, {', '.join(FAULT_KINDS)}"
        elif err["type"] == "missing":
            msg = "required, missing"
        out.append(f"{where}: {msg}")
    return out


def resolve_path(name_or_path: str | Path) -> Path:
    """A file path, or the name of a packaged scenario (`month`, `month.yaml`)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    packaged = SCENARIO_DIR / (p.name if p.suffix in (".yaml", ".yml") else f"{p.name}.yaml")
    if p.parent == Path(".") and packaged.is_file():
        return packaged
    known = ", ".join(sorted(f.stem for f in SCENARIO_DIR.glob("*.yaml")))
    raise InputError(f"Scenario {name_or_path} not found (not a file, nor a packaged scenario).",
                     f"Pass a YAML file path or one of: {known}.")


def load_scenario(name_or_path: str | Path, *, check_data: bool = True) -> Scenario:
    """Read and validate a scenario; every problem is named with its file and field, and how to fix it."""
    path = resolve_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"Scenario {path} is not valid YAML: {exc}",
                          "Fix the YAML syntax at the line shown.") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"Scenario {path} must be a mapping (name, schedule_every, original, phases, events).",
                          "See autooptimizer/soak/scenarios/month.yaml for the layout.")
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_problems(exc, data))
        raise ConfigError(f"Scenario {path} is invalid: {problems}",
                          "Correct those fields; the layout and every event kind are in docs/loop.md, Soak.") from exc
    if check_data:
        check_datasets(scenario, path)
    return scenario


def check_datasets(scenario: Scenario, path: Path | str = "scenario") -> None:
    """Every dataset named must be a BEIR folder (corpus.jsonl, queries.jsonl, qrels) under AUTOOPT_DATA_DIR."""
    from autooptimizer.settings import get_settings

    settings = get_settings()
    missing = []
    for name in scenario.datasets():
        try:
            folder = settings.dataset(name)
        except Exception:  # noqa: BLE001 - collected and reported together below
            missing.append(name)
            continue
        if not (folder / "corpus.jsonl").is_file() or not (folder / "queries.jsonl").is_file():
            missing.append(name)
    if missing:
        raise InputError(f"Scenario {path} names datasets that are not BEIR folders under AUTOOPT_DATA_DIR "
                         f"({settings.data_dir}): {missing}.",
                         "Fix the names, or set AUTOOPT_DATA_DIR to the folder that holds them "
                         "(each needs corpus.jsonl, queries.jsonl and qrels).")
