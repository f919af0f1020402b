"""The soak's measurements on known inputs: windows, fault attribution, growth, weighting, process RSS, disk."""

from __future__ import annotations

import os
from pathlib import Path

from autooptimizer.simulator.runner import RequestResult, mix_slots
from autooptimizer.soak.measure import (
    FaultWindows,
    TrafficLog,
    TrafficSample,
    disk_by_folder,
    disk_bytes,
    mean_ndcg,
    percentile,
    quarter_change,
    quarter_growth,
    rss_bytes,
    tree_rss_bytes,
    weighted_mean,
    window_sample,
)


def _r(t: float, ok: bool = True, ds: str = "a", ndcg: float | None = 0.5, ms: float = 10.0) -> RequestResult:
    return RequestResult(t=t, dataset=ds, ok=ok, latency_ms=ms if ok else None, ndcg=ndcg if ok else None,
                         model_version="v1" if ok else None, error=None if ok else "HTTP 500")


def test_a_failure_is_lost_unless_an_injected_fault_covers_it() -> None:
    faults = FaultWindows(grace=2.0)
    faults.open(10.0, 20.0)
    batch = [_r(5, ok=False), _r(15, ok=False), _r(21.5, ok=False), _r(22.5, ok=False), _r(30)]
    s = window_sample(batch, faults, t=30, sim_t=30, phase="p", mix=["a"])
    assert (s.sent, s.ok, s.failed) == (5, 1, 4)
    assert s.failed_injected == 2  # 15 inside, 21.5 inside the 2 s grace
    assert s.failed_lost == 2  # 5 before, 22.5 after the grace


def test_a_request_in_flight_during_a_fault_is_the_faults_whenever_it_fails() -> None:
    """The month soak's case: sent to the bad model inside its window, timed out 15 s after the window and its grace
    closed. By send time it is injected; a request sent after the window that fails is lost."""
    faults = FaultWindows(grace=5.0)
    faults.open(100.0, 120.0)
    timed_out = RequestResult(t=139.0, sent=119.0, dataset="cisi", ok=False, error="ReadTimeout")
    after = RequestResult(t=140.0, sent=130.0, dataset="cisi", ok=False, error="ReadTimeout")
    before = RequestResult(t=99.0, sent=98.0, dataset="cisi", ok=False, error="HTTP 500")
    s = window_sample([timed_out, after, before], faults, t=140, sim_t=140, phase="p", mix=["cisi"])
    assert (s.failed, s.failed_injected, s.failed_lost) == (3, 1, 2)
    log = TrafficLog(faults)
    for r in (timed_out, after):
        log.add(r)
    log.cut(t=140, sim_t=140, phase="p", mix=["cisi"], since=130.0, now=140.0)
    assert log.totals["failed_lost"] == 1 and log.lost_examples == ["cisi: ReadTimeout"]


def test_an_open_window_covers_until_closed() -> None:
    faults = FaultWindows(grace=0)
    i = faults.open(10.0)
    assert faults.covers(1e9)
    faults.close(i, 12.0)
    assert faults.covers(12.0) and not faults.covers(12.5)
    assert faults.overlaps(11, 30) and not faults.overlaps(13, 30)


def test_window_ndcg_is_per_domain_and_p95_nearest_rank() -> None:
    batch = [_r(1, ds="a", ndcg=1.0, ms=10), _r(2, ds="a", ndcg=0.0, ms=20), _r(3, ds="b", ndcg=0.4, ms=300)]
    s = window_sample(batch, FaultWindows(), t=5, sim_t=5, phase="p", mix=["a", "b"])
    assert s.ndcg == {"a": 0.5, "b": 0.4} and s.ndcg_n == {"a": 2, "b": 1}
    assert s.p95_ms == 300
    assert s.versions_served == {"v1": 3}
    assert percentile([1, 2, 3, 4], 0.5) == 2 and percentile([], 0.9) is None


def test_the_log_cuts_windows_and_keeps_totals() -> None:
    log = TrafficLog(FaultWindows())
    for t in range(5):
        log.add(_r(t))
    log.add(_r(6, ok=False))
    first = log.cut(t=10, sim_t=10, phase="p", mix=["a"], since=0, now=10)
    second = log.cut(t=20, sim_t=20, phase="p", mix=["a"], since=10, now=20)
    assert (first.sent, second.sent) == (6, 0)
    assert log.totals == {"sent": 6, "ok": 5, "failed": 1, "failed_injected": 0, "failed_lost": 1, "dropped": 0}
    assert log.lost_examples == ["a: HTTP 500"]


def test_dropped_ticks_are_failures_injected_only_inside_a_fault() -> None:
    faults = FaultWindows(grace=0)
    faults.open(100.0, 110.0)
    log = TrafficLog(faults)
    log.add(_r(1))
    quiet = log.cut(t=10, sim_t=10, phase="p", mix=["a"], since=0, now=10, dropped=3)
    during = log.cut(t=20, sim_t=20, phase="p", mix=["a"], since=95, now=105, dropped=4)
    assert (quiet.sent, quiet.failed, quiet.failed_lost, quiet.dropped) == (4, 3, 3, 3)
    assert (during.failed, during.failed_injected, during.failed_lost) == (4, 4, 0)
    assert log.totals["dropped"] == 7 and log.totals["failed_lost"] == 3
    assert log.lost_examples == ["3 ticks dropped: 3 requests could not be sent (all in flight)"]


def test_quarter_growth_compares_the_last_quarter_with_the_second() -> None:
    flat = [(float(t), 100.0) for t in range(16)]
    assert quarter_growth(flat) == 0.0
    rising = [(float(t), 100.0 + 10 * t) for t in range(16)]
    # second quarter t in [3.75, 7.5): 4..7 -> mean 155; last quarter t >= 11.25: 12..15 -> mean 235
    assert quarter_growth(rising) == round((235 - 155) / 155, 4)
    assert quarter_growth(flat[:5]) is None  # too few points: unknown, never "flat"


def test_weighting_and_mean_ndcg() -> None:
    assert weighted_mean({"a": 0.5, "b": 1.0}, {"a": 3, "b": 1}) == 0.625
    assert weighted_mean({"a": 0.5}, {}) is None
    samples = [TrafficSample(t=1, sim_t=1, phase="p", mix=[], ndcg={"a": 1.0}, ndcg_n={"a": 1}),
               TrafficSample(t=2, sim_t=2, phase="p", mix=[], ndcg={"a": 0.0}, ndcg_n={"a": 3})]
    assert mean_ndcg(samples, "a") == (0.25, 4)
    assert mean_ndcg(samples, "b") == (None, 0)


def test_mix_slots_share_by_weight() -> None:
    slots = mix_slots({"a": 0.7, "b": 0.3})
    assert len(slots) == 20 and slots.count("a") == 14 and slots.count("b") == 6
    assert slots[:2] == ["a", "b"]  # interleaved
    assert mix_slots({"a": 1}) == ["a"] * 20


def test_process_rss_and_disk(tmp_path: Path) -> None:
    assert rss_bytes(os.getpid()) > 1_000_000
    assert tree_rss_bytes(os.getpid()) >= rss_bytes(os.getpid())
    assert rss_bytes(2**22 + 12345) == 0  # no such process
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_bytes(b"x" * 1000)
    (tmp_path / "g").write_bytes(b"y" * 24)
    (tmp_path / "link").symlink_to(tmp_path / "d" / "f")
    assert disk_bytes(tmp_path) == 1024


def test_a_hard_linked_file_is_counted_once(tmp_path: Path) -> None:
    """Model versions share identical weights by hard link: the home's disk use counts them once, as `du` does."""
    (tmp_path / "models" / "a").mkdir(parents=True)
    (tmp_path / "models" / "b").mkdir(parents=True)
    (tmp_path / "models" / "a" / "w.npz").write_bytes(b"w" * 4000)
    os.link(tmp_path / "models" / "a" / "w.npz", tmp_path / "models" / "b" / "w.npz")
    (tmp_path / "mlflow").mkdir()
    os.link(tmp_path / "models" / "a" / "w.npz", tmp_path / "mlflow" / "w.npz")
    (tmp_path / "models" / "b" / "own.npz").write_bytes(b"o" * 100)
    assert disk_bytes(tmp_path / "models") == 4100
    assert disk_by_folder(tmp_path) == {"mlflow": 4000, "models": 100}  # first folder met (sorted) holds it
    assert disk_bytes(tmp_path) == 4100


def test_disk_by_folder_splits_the_home_and_leaves_the_harness_out(tmp_path: Path) -> None:
    for folder, size in [("models", 3000), ("feedback", 500), ("soak", 9999)]:
        (tmp_path / folder / "x").mkdir(parents=True)
        (tmp_path / folder / "x" / "f").write_bytes(b"x" * size)
    (tmp_path / "kill_switch.json").write_bytes(b"{}")
    (tmp_path / "corpora").symlink_to(tmp_path / "models")  # a linked folder is not the home's
    assert disk_by_folder(tmp_path) == {"models": 3000, "feedback": 500, ".": 2}
    assert sum(disk_by_folder(tmp_path).values()) == disk_bytes(tmp_path) - disk_bytes(tmp_path / "soak")
    assert disk_by_folder(tmp_path / "missing") == {}


def test_quarter_change_is_the_difference_of_the_quarter_means() -> None:
    pts = [(float(t), 10.0 if t < 8 else 16.0) for t in range(16)]  # q2 = t 3.75-7.5: 10; q4 = t >= 11.25: 16
    assert quarter_change(pts) == 6.0
    assert quarter_growth(pts) == 0.6
    assert quarter_change(pts[:7]) is None, "too few points to tell"
