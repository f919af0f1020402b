"""The soak timeline loader: the shipped scenarios hold what they promise; bad files fail naming file, field and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from autooptimizer.errors import ConfigError, InputError
from autooptimizer.soak.scenario import FAULT_KINDS, load_scenario, parse_duration

GOOD = """\
name: t
schedule_every: 30s
original: a
phases:
  - {name: one, duration: 2m, rate: 5, mix: a}
  - {name: two, duration: 1m, rate: 2}
events:
  - {at: 30s, kind: shift, to: {b: 0.7, a: 0.3}}
  - {at: 1m, kind: latency_spike, duration: 10s, latency_ms: 900}
  - {at: 90, kind: return, to: a}
  - {at: 100s, kind: kill_switch, duration: 5s}
"""


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from autooptimizer.search.sample_data import write_tiny_beir
    from autooptimizer.settings import get_settings

    for name in ("a", "b"):
        write_tiny_beir(tmp_path / "data" / name)
    monkeypatch.setenv("AUTOOPT_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    return tmp_path / "data"


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "s.yaml"
    p.write_text(text)
    return p


def test_durations() -> None:
    assert [parse_duration(v) for v in (90, "90", "90s", "15m", "1.5h", "2d")] == [90, 90, 90, 900, 5400, 172800]
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("two days")


def test_a_good_file_loads_with_its_timeline(tmp_path: Path, data: Path) -> None:
    sc = load_scenario(_write(tmp_path, GOOD))
    assert sc.duration == 180 and sc.phase_starts() == [0, 120]
    assert sc.datasets() == ["a", "b"]
    assert sc.scheduled_cycles() == 6
    assert sc.events[0].to == {"b": 0.7, "a": 0.3}
    assert sc.wall_seconds(speed=2) == 90
    assert sc.counts() == {"shift": 1, "latency_spike": 1, "return": 1, "kill_switch": 1}


@pytest.mark.parametrize(("change", "words"), [
    (("rate: 5", "rate: -1"), ["phases[0].rate", "greater than 0"]),
    (("kind: latency_spike", "kind: meteor"), ["events[1]", "unknown event kind", "latency_spike"]),
    (("latency_ms: 900", "latency_ms: 900, colour: red"), ["events[1].colour", "unknown key"]),
    (("duration: 2m", "duration: two minutes"), ["phases[0].duration", "not a duration"]),
    (("at: 90, kind: return, to: a", "at: 90, kind: return, to: c"), ["return", "never served before"]),
    (("at: 30s, kind: shift", "at: 30m, kind: shift"), ["events[0]", "after the end of the phases"]),
    (("schedule_every: 30s\n", ""), ["schedule_every", "required"]),
    (("rate: 5, mix: a", "rate: 5"), ["phases[0] needs a mix"]),
])
def test_bad_files_name_the_file_the_field_and_the_fix(tmp_path: Path, data: Path, change: tuple[str, str],
                                                       words: list[str]) -> None:
    path = _write(tmp_path, GOOD.replace(*change))
    with pytest.raises(ConfigError) as err:
        load_scenario(path)
    text = err.value.problem
    assert str(path) in text
    for w in words:
        assert w in text, text
    assert "docs/loop.md" in err.value.fix


def test_a_shift_to_a_served_domain_must_be_a_return(tmp_path: Path, data: Path) -> None:
    with pytest.raises(ConfigError, match="use `kind: return`"):
        load_scenario(_write(tmp_path, GOOD.replace("at: 30s, kind: shift, to: {b: 0.7, a: 0.3}",
                                                    "at: 30s, kind: shift, to: a")))


def test_missing_dataset_is_named_with_the_data_dir(tmp_path: Path, data: Path) -> None:
    with pytest.raises(InputError) as err:
        load_scenario(_write(tmp_path, GOOD.replace("b: 0.7", "nosuch: 0.7")))
    assert "nosuch" in err.value.problem and str(data) in err.value.problem
    assert "AUTOOPT_DATA_DIR" in err.value.fix


def test_yaml_syntax_and_unknown_names(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_scenario(_write(tmp_path, "name: [unclosed"))
    with pytest.raises(InputError) as err:
        load_scenario("no-such-scenario")
    assert "month" in err.value.fix


@pytest.mark.parametrize("name", ["month", "untuned"])
def test_shipped_scenarios_hold_what_the_issue_asks(name: str) -> None:
    sc = load_scenario(name, check_data=False)
    assert sc.scheduled_cycles() >= 72
    kinds = sc.counts()
    for kind in FAULT_KINDS:
        assert kinds.get(kind, 0) >= 1, kind
    assert kinds["return"] >= 1
    new_domains = [d for d in sc.datasets() if d != sc.original]
    assert len(new_domains) >= 2


def test_the_untuned_timeline_differs_from_month() -> None:
    month, other = load_scenario("month", check_data=False), load_scenario("untuned", check_data=False)
    assert set(month.datasets()) - {month.original} != set(other.datasets()) - {other.original}
    assert [p.rate for p in month.phases] != [p.rate for p in other.phases]
    assert [e.kind for e in month.events] != [e.kind for e in other.events]


def test_ci_scenario_is_short() -> None:
    sc = load_scenario("ci", check_data=False)
    assert sc.wall_seconds() <= 180 and sc.original == "tiny-orig"
