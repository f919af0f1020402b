"""Live signals: per-request NDCG@10 from the real service's feedback log; guards unknown without Prometheus."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from autooptimizer.loop.signals import FeedbackLog, LiveSource, PrometheusGuards, ndcg_at_10
from autooptimizer.settings import get_settings
from autooptimizer.testing import TinyService, make_versions


def test_ndcg_at_10_known_answers() -> None:
    assert ndcg_at_10(["a", "b"], {"a": 1}) == pytest.approx(1.0)
    assert ndcg_at_10(["b", "a"], {"a": 1}) == pytest.approx(1 / 1.5849625, rel=1e-6)
    assert ndcg_at_10(["x"], {}) == 0.0
    # graded judgments use linear gain, like the service's /feedback and ir_measures
    assert ndcg_at_10(["b", "a"], {"a": 2, "b": 1}) == pytest.approx((1 + 2 / 1.5849625) / (2 + 1 / 1.5849625))


def test_feedback_log_samples_per_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOOPT_PROMETHEUS_URL", "http://127.0.0.1:9")
    make_versions(["v-a", "v-b"])
    svc = TinyService(tmp_path, "v-a")
    get_settings.cache_clear()
    try:
        since = time.time()
        for _ in range(3):
            hit = httpx.get(f"{svc.url}/search", params={"q": "wing flutter in supersonic flow", "k": 10}).json()
            httpx.post(f"{svc.url}/feedback", json={"query": "wing flutter", "model_version": hit["model_version"],
                                                    "request_id": hit["request_id"],
                                                    "judgments": {"tiny/wing0": 2, "tiny/wing1": 1}}).raise_for_status()
        settings = get_settings()
        path = settings.feedback_log
        assert path.is_file()
        log = FeedbackLog(path)
        samples = log.samples("v-a", since)
        assert len(samples) == 3 and all(0 < s <= 1 for s in samples)
        assert log.samples("v-b", since) == [] and log.samples("v-a", time.time() + 1) == []
        snap = LiveSource(settings).snapshot("v-a", since)
        assert len(snap.ndcg) == 3 and snap.p95_latency_ms is None and snap.error_rate is None
        # per-request server latencies come with the feedback that named its request_id
        assert len(snap.latency_ms) == 3 and all(ms > 0 for ms in snap.latency_ms)
        assert log.latencies("v-a", since) == snap.latency_ms and log.latencies("v-b", since) == []
    finally:
        svc.stop()


def test_feedback_log_reads_incrementally_and_skips_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "fb.jsonl"
    path.write_text('{"ts": 10, "model_version": "m", "ndcg10": 0.5}\nnot json\n{"ts": 11, "model_version": "m"')
    log = FeedbackLog(path)
    assert log.samples("m", 0) == [0.5]
    with path.open("a") as fh:
        fh.write(', "served": [{"doc_id": "d"}], "judgments": {"d": 1}}\n')
    assert log.samples("m", 0) == [0.5, 1.0]
    assert log.latencies("m", 0) == []
    # latency_ms is read per record; a record with latency but no NDCG still counts as a latency sample
    with path.open("a") as fh:
        fh.write('{"ts": 12, "model_version": "m", "ndcg10": 0.25, "latency_ms": 31.5}\n'
                 '{"ts": 13, "model_version": "m", "ndcg10": null, "latency_ms": 40}\n'
                 '{"ts": 14, "model_version": "m", "ndcg10": 0.75, "latency_ms": -1}\n')
    assert log.samples("m", 0) == [0.5, 1.0, 0.25, 0.75] and log.latencies("m", 0) == [31.5, 40.0]
    assert log.latencies("m", 12.5, 14) == [40.0]


def test_prometheus_guards_unknown_when_down() -> None:
    got = PrometheusGuards("http://127.0.0.1:9", timeout=1).read("v", time.time() - 10)
    assert (got.p95_latency_ms, got.error_rate, got.requests) == (None, None, None)


@pytest.mark.parametrize(("answers", "expected"), [
    # (p95, requests, error ratio) answers -> (error_rate, requests); a missing or NaN ratio is unknown, never 0
    ({"histogram": "50", "requests": "40", "ratio": "0.05"}, (0.05, 40.0)),
    ({"histogram": "50", "requests": "40", "ratio": None}, (None, 40.0)),
    ({"histogram": "50", "requests": "40", "ratio": "NaN"}, (None, 40.0)),
    ({"histogram": "50", "requests": "0", "ratio": "NaN"}, (None, 0.0)),
    ({"histogram": None, "requests": None, "ratio": "0.0"}, (None, None)),
], ids=["known", "ratio-missing", "ratio-nan", "no-requests", "requests-unknown"])
def test_prometheus_guards_never_read_an_unknown_error_count_as_zero(answers: dict, expected: tuple) -> None:
    from fake_prometheus import FakeProm, vector

    def answer(q: str) -> tuple[int, object]:
        key = "histogram" if "histogram_quantile" in q else "ratio" if " / " in q else "requests"
        return 200, vector() if answers[key] is None else vector(answers[key])

    fake = FakeProm(answer)
    try:
        got = PrometheusGuards(fake.url, timeout=2).read("v", time.time() - 10)
    finally:
        fake.close()
    assert (got.error_rate, got.requests) == expected



def _records(path: Path, start: int, stop: int) -> None:
    with path.open("a") as fh:
        for i in range(start, stop):
            fh.write(json.dumps({"ts": 1000 + i, "model_version": "m", "ndcg10": i / 1000,
                                 "request_id": f"r{i}"}) + "\n")


def _seen(log: FeedbackLog) -> list[int]:
    return [round(v * 1000) for v in log.samples("m", 0)]


def _in_file(path: Path) -> list[int]:
    return [round(json.loads(x)["ndcg10"] * 1000) for x in path.read_text().splitlines()]


def test_a_trim_while_the_tail_is_open_neither_skips_nor_rereads(tmp_path: Path) -> None:
    """retention's trim_log replaces the file by its newest bytes while the optimizer's tail holds an offset into
    the old file: the tail goes on right after the last record it read, and forgets the rows the trim cut."""
    from autooptimizer.loop.retention import trim_log

    path = tmp_path / "fb.jsonl"
    _records(path, 0, 100)
    log = FeedbackLog(path)
    assert _seen(log) == list(range(100))
    _records(path, 100, 130)  # appended, not read yet
    trim_log(path, path.stat().st_size // 2)  # cuts records the tail has read
    _records(path, 130, 140)
    kept = _in_file(path)
    assert 0 < kept[0] < 100 and kept[-1] == 139
    assert _seen(log) == kept, "each record once, in order; rows of records the trim cut are dropped from memory"
    # a trim that also cuts records the tail never read: those are gone, the rest is read once
    _records(path, 140, 200)
    trim_log(path, path.stat().st_size // 10)
    kept = _in_file(path)
    assert kept[0] > 140 and kept[-1] == 199
    assert _seen(log) == kept
    # a file emptied in place (offset beyond its end) is read from its start, without a crash
    path.write_text("")
    assert _seen(log) == kept
    _records(path, 500, 502)
    assert _seen(log) == [500, 501]
