"""The NDCG anchor as loop state (loop/anchor.py): set by the scheduler's first healthy reading, re-set for a new
champion once its windows have settled, reset by an operator (audited), never overwritten while corrupt; and the
scheduler keeps starting cycles while the anchored gate fires after the sliding baseline slid."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_prometheus import FakeProm
from test_gates_anchor import CISI, CRAN, PROD, SCIFACT, Windows
from typer.testing import CliRunner

from autooptimizer.errors import NotFoundError
from autooptimizer.gates import GateReport, NdcgAnchor, evaluate_gates
from autooptimizer.loop.anchor import AnchorStore, conservative_level
from autooptimizer.loop.cycle import CycleOptions
from autooptimizer.loop.scheduler import Scheduler
from autooptimizer.policies.audit import AuditLog
from autooptimizer.search import aliases
from autooptimizer.settings import Settings, get_settings


@pytest.fixture
def prom(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeProm]:
    fake = FakeProm()
    monkeypatch.setenv("AUTOOPT_PROMETHEUS_URL", fake.url)
    get_settings.cache_clear()
    yield fake
    fake.close()


class Runner:
    """Stands in for CycleRunner in the scheduler: the settings and profile it reads, the starts it would make."""

    def __init__(self) -> None:
        self.settings: Settings = get_settings()
        self.profile = PROD
        self.started: list[CycleOptions] = []
        self.busy = False
        self.journal = self  # no cycle of these ever finishes: the scheduler's no_remedy hold never applies

    def find(self, _cycle_id: str) -> None:
        return None

    def recover(self) -> list[object]:
        return []

    def is_running(self) -> bool:
        return self.busy

    def trigger(self, options: CycleOptions) -> str | None:
        self.started.append(options)
        return f"si_{len(self.started)}"


def _file(settings: Settings) -> dict[str, object]:
    return json.loads(settings.path("loop", "ndcg_anchor.json").read_text())


def test_the_scheduler_anchors_then_keeps_firing_after_the_baseline_slid(prom: FakeProm) -> None:
    aliases.set_alias(aliases.CHAMPION, "v-a")
    runner = Runner()
    sched = Scheduler(runner)  # type: ignore[arg-type]
    n = PROD.gates.consecutive_readings

    def reading(w: Windows) -> GateReport:
        prom.answer = w.answer
        report = sched.read_gates()
        sched.observe(report)
        return report

    runner.busy = True  # a cycle (its canary) splits the traffic: no anchor from this reading
    reading(Windows(now=SCIFACT, base=SCIFACT))
    assert not runner.settings.path("loop", "ndcg_anchor.json").exists()
    runner.busy = False
    reading(Windows(now=SCIFACT, base=SCIFACT))  # healthy SciFact traffic: the anchor is set from the baseline
    doc = _file(runner.settings)
    anchored = round(conservative_level(SCIFACT, 240), 6)
    assert anchored == pytest.approx(0.70 - 2 * (0.70 * 0.30 / 240) ** 0.5)  # 0.6408: the mean's lower bound
    assert (doc["champion"], doc["ndcg10"], doc["mean"], doc["samples"]) == ("v-a", anchored, SCIFACT, 240)
    assert doc["how"] == "first healthy reading of champion v-a (no anchor)"

    for _ in range(n):  # the shift to cran: both comparisons fire, a cycle after N readings
        reading(Windows(now=CRAN, base=SCIFACT))
    assert runner.started == [CycleOptions(trigger="gate", gate="ndcg_drop")]
    for _ in range(n):  # two minutes later the baseline is cran too: only the anchor fires, and a cycle follows
        report = reading(Windows(now=CRAN, base=CRAN))
    gate = report.gate("ndcg_drop")
    assert gate.status == "firing" and gate.evidence.anchor is not None
    assert gate.evidence.anchor.fired_by == ["anchor"]
    assert gate.value == pytest.approx(100 * (1 - CRAN / anchored), abs=1e-3)  # 40.7 %
    assert len(runner.started) == 2
    for _ in range(n):  # cran -> cisi, as weak: still confirmed on the anchor
        reading(Windows(now=CISI, base=CRAN))
    assert len(runner.started) == 3 and _file(runner.settings)["ndcg10"] == anchored  # never re-set by a drop


def test_a_new_champion_is_anchored_at_its_first_healthy_reading_after_the_windows_settle(tmp_path: Path,
                                                                                          prom: FakeProm) -> None:
    champion = {"now": "v-a"}
    store = AnchorStore(tmp_path / "ndcg_anchor.json", champion=lambda: champion["now"], settle_seconds=150)

    def reading(w: Windows, t: float, busy: bool = False) -> tuple[GateReport, NdcgAnchor | None]:
        prom.answer = w.answer
        report = evaluate_gates(prometheus_url=prom.url, profile=PROD, anchor=store.read(), now=t)
        return report, store.observe(report, busy=busy, now=t)

    assert reading(Windows(SCIFACT, SCIFACT), 1000.0)[1] is not None
    champion["now"] = "v-b"  # promoted after its watch (or rolled back to): the alias moved
    report, written = reading(Windows(0.45, 0.45), 2000.0)
    assert report.gate("ndcg_drop").evidence.anchor.state == "other_champion"  # type: ignore[union-attr]
    assert written is not None and (written.champion, written.ndcg10, written.not_before) == ("v-b", None, 2150.0)
    assert written.how == "champion changed from v-a (anchor 0.6408)"
    report, written = reading(Windows(0.45, 0.45), 2149.0)  # the baseline window may still hold v-a's traffic
    assert written is None and report.gate("ndcg_drop").evidence.anchor.state == "pending"  # type: ignore[union-attr]
    report, written = reading(Windows(0.45, 0.45), 2150.0)
    anchored = round(conservative_level(0.45, 240), 6)  # 0.3858
    assert written is not None and (written.champion, written.ndcg10, written.mean) == ("v-b", anchored, 0.45)
    assert written.how == "first healthy reading of champion v-b (after champion changed from v-a (anchor 0.6408))"
    gate = reading(Windows(0.40, 0.40), 2200.0)[0].gate("ndcg_drop")
    assert gate.status == "ok"  # 0.40 is within the noise of a 240-sample mean of 0.45
    gate = reading(Windows(0.30, 0.30), 2300.0)[0].gate("ndcg_drop")
    assert gate.status == "firing" and gate.value == pytest.approx(100 * (1 - 0.30 / anchored), abs=1e-3)


def test_the_default_store_follows_the_champion_alias(tmp_path: Path) -> None:
    aliases.set_alias(aliases.CHAMPION, "v-a")
    store = AnchorStore(tmp_path / "a.json")
    store.save(NdcgAnchor(champion="v-a", ndcg10=0.7, samples=240, set_at=1.0, how="test"))
    assert store.read().state == "set" and store.read().level == 0.7
    aliases.set_alias(aliases.CHAMPION, "v-b")  # what move_champion and Release._align_champion write
    assert (store.read().state, store.read().champion, store.read().level) == ("other_champion", "v-b", None)


def test_a_corrupt_file_is_never_overwritten_by_the_loop(tmp_path: Path, prom: FakeProm) -> None:
    store = AnchorStore(tmp_path / "ndcg_anchor.json", champion=lambda: "v-a")
    store.path.write_text("{not json")
    prom.answer = Windows(SCIFACT, SCIFACT).answer
    report = evaluate_gates(prometheus_url=prom.url, profile=PROD, anchor=store.read())
    assert report.gate("ndcg_drop").status == "ok"  # the sliding comparison still decides
    assert store.observe(report, busy=False) is None and store.path.read_text() == "{not json"


def test_reset_is_audited_and_the_next_healthy_reading_anchors_at_the_level_served_now(prom: FakeProm) -> None:
    from autooptimizer.cli import app

    aliases.set_alias(aliases.CHAMPION, "v-a")
    store = AnchorStore.for_settings(get_settings())
    store.save(NdcgAnchor(champion="v-a", ndcg10=SCIFACT, samples=240, set_at=1.0, how="test"))
    out = CliRunner().invoke(app, ["gates", "anchor", "--reset", "--by", "alice", "--reason", "cran is the new mix"])
    assert out.exit_code == 0, out.output
    assert "NDCG anchor reset for v-a" in out.output
    doc = _file(get_settings())
    assert (doc["champion"], doc["ndcg10"], doc["how"]) == ("v-a", None, "reset by alice: cran is the new mix")
    record = list(AuditLog().records())[-1]
    assert (record["kind"], record["actor"], record["champion"]) == ("ndcg_anchor_reset", "alice", "v-a")
    assert record["previous"]["ndcg10"] == SCIFACT and AuditLog().verify().ok

    prom.answer = Windows(CRAN, CRAN).answer  # still on cran: the level the operator accepted
    report = evaluate_gates(prometheus_url=prom.url, profile=PROD, anchor=store.read())
    assert report.gate("ndcg_drop").evidence.anchor.state == "pending"  # type: ignore[union-attr]
    written = store.observe(report, busy=False)
    cran_anchor = round(conservative_level(CRAN, 240), 6)
    assert written is not None and (written.ndcg10, written.mean) == (cran_anchor, CRAN)
    assert written.how == "first healthy reading of champion v-a (after reset by alice: cran is the new mix)"
    gate = evaluate_gates(prometheus_url=prom.url, profile=PROD, anchor=store.read()).gate("ndcg_drop")
    assert gate.status == "ok" and gate.evidence.anchor.anchored_drop < 0  # type: ignore[union-attr]
    shown = CliRunner().invoke(app, ["gates", "anchor", "--json"])
    assert shown.exit_code == 0 and json.loads(shown.stdout)["anchor"]["ndcg10"] == cran_anchor
    gates_json = CliRunner().invoke(app, ["gates", "--json", "--env", "prod"])  # the plain command still works
    assert gates_json.exit_code == 0, gates_json.output
    ndcg = json.loads(gates_json.stdout)["gates"][0]
    assert ndcg["name"] == "ndcg_drop" and ndcg["evidence"]["anchor"]["anchor_ndcg10"] == cran_anchor


def test_reset_replaces_a_corrupt_file_and_needs_a_champion(tmp_path: Path) -> None:
    store = AnchorStore(tmp_path / "ndcg_anchor.json", champion=lambda: "v-a")
    store.path.write_text("garbage")
    store.reset("bob", now=5.0)
    assert store.read().state == "pending" and store.read().due(5.0)
    assert list(AuditLog().records())[-1]["previous_error"].startswith("The NDCG anchor file")
    with pytest.raises(NotFoundError, match="no `champion` alias"):
        AnchorStore(tmp_path / "b.json", champion=lambda: None).reset("bob")


@pytest.mark.parametrize(("mean", "samples", "expected"), [(0.70, 240, 0.640839), (0.740297, 209, 0.679638),
                                                           (0.38, 240, 0.317337), (1.0, 100, 1.0), (0.01, 1, 0.0)])
def test_the_anchor_is_the_means_lower_bound(mean: float, samples: int, expected: float) -> None:
    """mean - 2 sqrt(mean (1 - mean) / n): the month soak's lucky 0.740 from 209 samples anchors at 0.680, below its
    long-run 0.725, so ordinary SciFact windows no longer read as a drop."""
    assert conservative_level(mean, samples) == pytest.approx(expected, abs=1e-6)


def test_a_reading_without_a_sample_count_sets_no_anchor(tmp_path: Path, prom: FakeProm) -> None:
    store = AnchorStore(tmp_path / "a.json", champion=lambda: "v-a")
    prom.answer = Windows(SCIFACT, SCIFACT).answer
    report = evaluate_gates(prometheus_url=prom.url, profile=PROD, anchor=store.read())
    report.gate("ndcg_drop").evidence.samples["baseline"] = None
    assert store.observe(report, busy=False) is None and not (tmp_path / "a.json").exists()


def test_a_file_that_is_not_utf8_reads_as_corrupt_and_the_gates_still_read(tmp_path: Path, prom: FakeProm) -> None:
    """Binary garbage (a torn disk write, a wrong file copied over) is a corrupt anchor like any other: the reading
    goes on with the sliding comparison. It raised UnicodeDecodeError, which failed every scheduler reading (all
    four gates reset to unknown) and `autoopt gates`."""
    store = AnchorStore(tmp_path / "ndcg_anchor.json", champion=lambda: "v-a")
    store.path.write_bytes(b"\xff\xfe\x00garbage")
    read = store.read()
    assert read.state == "corrupt" and read.error is not None and str(store.path) in read.error
    assert "autoopt gates anchor --reset" in read.error
    prom.answer = Windows(SCIFACT, SCIFACT).answer
    report = evaluate_gates(prometheus_url=prom.url, profile=PROD, anchor=read)
    assert report.gate("ndcg_drop").status == "ok"
    assert store.observe(report, busy=False) is None and store.path.read_bytes() == b"\xff\xfe\x00garbage"


@pytest.mark.parametrize("text", [
    '{"champion": "v-a", "ndcg_10": 0.7, "set_at": 1, "how": "hand"}',  # a typo: read as a pending re-anchor
    '{"champion": "v-a", "set_at": 1, "how": "hand", "not_before": Infinity}',  # pending forever
    '{"champion": "v-a", "ndcg10": 0.7, "set_at": NaN, "how": "hand"}',
])
def test_a_hand_edited_file_the_gate_cannot_use_as_written_is_corrupt(tmp_path: Path, prom: FakeProm,
                                                                      text: str) -> None:
    """An operator's edit that names an unknown field or a non-finite time is reported (the error names the file
    and the fix) and kept: it was read as a pending re-anchor, which the loop then overwrote at the next healthy
    reading, losing the edit without a word (or, with not_before Infinity, never re-anchored)."""
    store = AnchorStore(tmp_path / "ndcg_anchor.json", champion=lambda: "v-a")
    store.path.write_text(text)
    read = store.read()
    assert read.state == "corrupt" and read.error is not None and str(store.path) in read.error
    prom.answer = Windows(SCIFACT, SCIFACT).answer
    report = evaluate_gates(prometheus_url=prom.url, profile=PROD, anchor=read)
    assert store.observe(report, busy=False) is None and store.path.read_text() == text


def test_an_unreadable_champion_alias_leaves_the_gates_on_the_sliding_comparison(tmp_path: Path,
                                                                                  prom: FakeProm) -> None:
    """The anchor reads the `champion` alias; a hand-broken aliases.json raised JSONDecodeError out of every gate
    reading (the scheduler's, `autoopt gates`, the console's), so no gate could fire at all. The anchor is an
    addition: the reading goes on without it, and says which file to fix."""
    from autooptimizer.errors import AutoOptError

    aliases.set_alias(aliases.CHAMPION, "v-a")
    aliases.aliases_path().write_text('{"champion": "v-a",')
    store = AnchorStore(tmp_path / "ndcg_anchor.json")
    store.save(NdcgAnchor(champion="v-a", ndcg10=SCIFACT, samples=240, set_at=1.0, how="test"))
    read = store.read()
    assert read.state == "corrupt" and read.error is not None
    assert str(aliases.aliases_path()) in read.error and "champion" in read.error
    prom.answer = Windows(SCIFACT, SCIFACT).answer
    report = evaluate_gates(prometheus_url=prom.url, profile=PROD, anchor=read)
    assert report.gate("ndcg_drop").status == "ok"
    assert store.observe(report, busy=False) is None and store.read().state == "corrupt"
    with pytest.raises(AutoOptError, match="champion") as err:
        store.reset("bob")
    assert str(aliases.aliases_path()) in err.value.fix
