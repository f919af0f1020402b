"""The NDCG gate's anchored comparison (gates.py, NDCG baselines) against a local server that computes each query
the way Prometheus would from two window means: the soak's two failures as known answers, and how a missing,
corrupt or unreadable anchor falls back to the sliding comparison."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_prometheus import FakeProm, vector

from autooptimizer.gates import AnchorRead, GateReport, NdcgAnchor, anchored_drop_promql, evaluate_gates, gate_queries
from autooptimizer.gates import ndcg_means as means_promql
from autooptimizer.loop.anchor import AnchorStore
from autooptimizer.profiles import load_profile

PROD = load_profile("prod")  # W 30 s, baseline 120 s, fires at >= 3 %, 100 feedback samples per window


class Windows:
    """The mean online NDCG@10 of the current and the baseline window, and the feedback counts in each; answers the
    gate's queries with what Prometheus would compute from them (the anchored one from its constant)."""

    def __init__(self, now: float, base: float, counts: float = 240.0) -> None:
        self.now, self.base, self.counts = now, base, counts
        self.fail_anchored = False
        self.sliding_nan = False
        queries = {q.name: q for q in gate_queries(PROD)}
        self.sliding = queries["ndcg_drop"].promql
        self.count_queries = {c.promql for q in queries.values() for c in q.counts}
        self.now_q, self.base_q = means_promql(PROD)
        self.anchored = re.compile(re.escape(f"100 * (1 - ({self.now_q}) / ") + r"([0-9.e-]+)\)$")

    def answer(self, promql: str) -> tuple[int, object]:
        if promql == self.sliding:
            return 200, vector("NaN" if self.sliding_nan else 100 * (1 - self.now / self.base))
        if promql == self.base_q:
            return 200, vector(self.base)
        if promql == self.now_q:
            return 200, vector(self.now)
        if promql in self.count_queries:
            return 200, vector(self.counts)
        if m := self.anchored.match(promql):
            if self.fail_anchored:
                return 500, {"status": "error", "errorType": "execution", "error": "boom"}
            return 200, vector(100 * (1 - self.now / float(m.group(1))))
        return 200, vector(0.0)  # latency, cost, retries: healthy


@pytest.fixture
def prom() -> Iterator[FakeProm]:
    fake = FakeProm()
    yield fake
    fake.close()


def _read(prom: FakeProm, w: Windows, anchor: AnchorRead | None, now: float = 1000.0) -> GateReport:
    prom.answer = w.answer
    return evaluate_gates(prometheus_url=prom.url, env="prod", profile=PROD, anchor=anchor, now=now)


def _set(level: float, champion: str = "v-a") -> AnchorRead:
    return AnchorRead(state="set", path="/x/ndcg_anchor.json", champion=champion,
                      anchor=NdcgAnchor(champion=champion, ndcg10=level, samples=240, set_at=1.0, how="test"))


SCIFACT, CRAN, CISI = 0.70, 0.38, 0.376  # online NDCG@10 with gold in the second month soak (docs/benchmarks.md)


def test_a_persistent_shortfall_fires_on_the_anchor_after_the_baseline_slid(prom: FakeProm) -> None:
    slid = Windows(now=CRAN, base=CRAN)  # > W + baseline after the shift: both windows on cran
    assert _read(prom, slid, None).gate("ndcg_drop").status == "ok"  # the sliding gate alone: "no drop"
    gate = _read(prom, slid, _set(SCIFACT)).gate("ndcg_drop")
    assert gate.status == "firing"
    assert gate.value == pytest.approx(100 * (1 - CRAN / SCIFACT)) == pytest.approx(45.714, abs=1e-3)
    a = gate.evidence.anchor
    assert a is not None and a.state == "set" and a.fired_by == ["anchor"]
    assert a.sliding_drop == pytest.approx(0.0) and a.anchored_drop == pytest.approx(45.714, abs=1e-3)
    assert a.anchor_ndcg10 == SCIFACT and a.anchor_samples == 240
    assert a.promql == anchored_drop_promql(PROD, SCIFACT) and a.promql.endswith(" / 0.7)")
    assert gate.evidence.promql == gate_queries(PROD)[0].promql  # the sliding expression stays the gate's PromQL


def test_a_shift_from_one_weak_domain_to_another_fires(prom: FakeProm) -> None:
    w = Windows(now=CISI, base=CRAN)  # cran -> cisi: 1.05 % against the window before, below the 3 % threshold
    sliding_only = _read(prom, w, None).gate("ndcg_drop")
    assert (sliding_only.status, round(sliding_only.value or 0, 3)) == ("ok", 1.053)
    gate = _read(prom, w, _set(SCIFACT)).gate("ndcg_drop")
    assert gate.status == "firing" and gate.value == pytest.approx(100 * (1 - CISI / SCIFACT))
    assert gate.evidence.anchor is not None and gate.evidence.anchor.fired_by == ["anchor"]
    assert gate.evidence.anchor.sliding_drop == pytest.approx(1.0526, abs=1e-4)


def test_a_sudden_shift_fires_on_both_and_the_value_is_the_larger_drop(prom: FakeProm) -> None:
    gate = _read(prom, Windows(now=CRAN, base=0.75), _set(SCIFACT)).gate("ndcg_drop")
    a = gate.evidence.anchor
    assert a is not None and a.fired_by == ["sliding", "anchor"]
    assert gate.value == pytest.approx(100 * (1 - CRAN / 0.75))  # 49.3 %, the larger of the two
    assert a.anchored_drop == pytest.approx(100 * (1 - CRAN / SCIFACT)) and a.anchored_drop < gate.value


def test_at_the_anchor_level_the_gate_is_ok(prom: FakeProm) -> None:
    gate = _read(prom, Windows(now=0.69, base=0.70), _set(SCIFACT)).gate("ndcg_drop")
    assert gate.status == "ok" and gate.evidence.anchor is not None and gate.evidence.anchor.fired_by == []
    assert gate.value == pytest.approx(100 * (1 - 0.69 / 0.70))  # 1.43 %: both drops equal here


def test_too_few_samples_stay_unknown_and_the_anchor_is_not_asked(prom: FakeProm) -> None:
    w = Windows(now=CRAN, base=CRAN, counts=99)
    gate = _read(prom, w, _set(SCIFACT)).gate("ndcg_drop")
    assert (gate.status, gate.value) == ("unknown", None)
    assert gate.evidence.anchor is not None and "not compared" in gate.evidence.anchor.note
    assert not any(q.startswith("100 * (1 - (sum") and q.endswith(" / 0.7)") for q in prom.seen)


def test_an_anchored_query_that_fails_leaves_the_sliding_reading(prom: FakeProm) -> None:
    w = Windows(now=CRAN, base=CRAN)
    w.fail_anchored = True
    gate = _read(prom, w, _set(SCIFACT)).gate("ndcg_drop")
    assert gate.status == "ok" and gate.value == pytest.approx(0.0)
    a = gate.evidence.anchor
    assert a is not None and a.anchored_drop is None and "sliding comparison only" in (a.error or "")


def test_without_a_usable_anchor_the_gate_is_the_sliding_one_and_says_why(prom: FakeProm, tmp_path: Path) -> None:
    store = AnchorStore(tmp_path / "ndcg_anchor.json", champion=lambda: "v-a")
    w = Windows(now=CRAN, base=CRAN)
    missing = _read(prom, w, store.read()).gate("ndcg_drop")
    assert missing.status == "ok" and missing.evidence.anchor is not None
    assert missing.evidence.anchor.state == "missing" and "no anchor yet" in missing.evidence.anchor.note
    assert missing.evidence.anchor.baseline_ndcg10 == CRAN  # due: the level a healthy reading would anchor at
    store.path.write_text("{not json")
    corrupt = _read(prom, w, store.read()).gate("ndcg_drop")
    assert corrupt.status == "ok" and corrupt.evidence.anchor is not None
    note = corrupt.evidence.anchor.note
    assert corrupt.evidence.anchor.state == "corrupt" and str(store.path) in note and "Delete it" in note
    other = AnchorStore(store.path, champion=lambda: "v-b")
    store.save(NdcgAnchor(champion="v-a", ndcg10=SCIFACT, samples=240, set_at=1.0, how="test"))
    moved = _read(prom, w, other.read()).gate("ndcg_drop")
    assert moved.status == "ok" and moved.evidence.anchor is not None
    assert moved.evidence.anchor.state == "other_champion" and moved.evidence.anchor.anchored_drop is None
    assert _read(prom, w, None).gate("ndcg_drop").evidence.anchor.state == "not_given"  # type: ignore[union-attr]


@pytest.mark.parametrize("content, what", [
    ("{not json", "is corrupt"),
    (json.dumps({"champion": "v-a", "ndcg10": 1.7, "set_at": 1.0, "how": "x"}), "is corrupt"),  # NDCG above 1
    (json.dumps({"ndcg10": 0.7, "set_at": 1.0, "how": "x"}), "is corrupt"),  # no champion
    (None, "cannot be read"),  # a directory where the file should be
])
def test_a_corrupt_or_unreadable_anchor_file_is_named_with_the_fix(tmp_path: Path, content: str | None,
                                                                    what: str) -> None:
    store = AnchorStore(tmp_path / "ndcg_anchor.json", champion=lambda: "v-a")
    if content is None:
        store.path.mkdir()
    else:
        store.path.write_text(content)
    read = store.read()
    assert read.state == "corrupt" and read.level is None and not read.due(1e12)
    assert read.error is not None and read.error.startswith(f"The NDCG anchor file {store.path} {what}")
    assert read.error.endswith("Delete it (or run `autoopt gates anchor --reset`) to re-anchor at the next healthy "
                               "reading.")


@pytest.mark.parametrize("w, status", [
    (Windows(now=0.0, base=0.0), "firing"),  # both windows on a domain served at 0: the sliding value is NaN
    (Windows(now=0.69, base=0.0), "unknown"),  # NaN sliding, anchored 1.4 %: the anchor never turns unknown into ok
])
def test_an_unknown_sliding_reading_can_only_fire_on_the_anchor(prom: FakeProm, w: Windows, status: str) -> None:
    w.sliding_nan = True
    gate = _read(prom, w, _set(SCIFACT)).gate("ndcg_drop")
    assert gate.status == status
    a = gate.evidence.anchor
    assert a is not None and a.anchored_drop == pytest.approx(100 * (1 - w.now / SCIFACT))
    if status == "firing":
        assert gate.value == pytest.approx(100.0) and a.fired_by == ["anchor"] and gate.evidence.error is None
        assert (a.sliding_error or "").startswith("NaN")
    else:
        assert gate.value is None and (gate.evidence.error or "").startswith("NaN") and a.fired_by == []


def test_a_short_baseline_window_with_a_full_current_one_fires_on_the_anchor(prom: FakeProm) -> None:
    w = Windows(now=CRAN, base=CRAN)
    prom.answer = w.answer
    base_count = gate_queries(PROD)[0].counts[1].promql

    def answer(q: str) -> tuple[int, object]:
        return (200, vector(12.0)) if q == base_count else w.answer(q)

    prom.answer = answer
    gate = evaluate_gates(prometheus_url=prom.url, profile=PROD, anchor=_set(SCIFACT)).gate("ndcg_drop")
    assert gate.status == "firing" and gate.value == pytest.approx(45.714, abs=1e-3)
    assert gate.evidence.anchor is not None
    assert gate.evidence.anchor.sliding_error == "12 feedback samples in the baseline window (120s), need 100 " \
                                                 "(gates.minSamples)"
