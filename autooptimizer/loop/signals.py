"""Live numbers per model version for the A/B judge and the post-promotion watch.

- per-request NDCG@10 and server latency (ms) samples: the search service's feedback log (JSONL under
  AUTOOPT_HOME; `latency_ms` is there when the feedback named its /search `request_id`), because a statistical test
  needs samples and Prometheus only holds their sum and count (or histogram buckets);
- p95 latency (for the absolute gate) and error rate: Prometheus, over the window since the test started
  (`increase(...[Ns])`).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, BinaryIO, Literal, cast

from pydantic import BaseModel

from autooptimizer.loop.abtest import ArmSnapshot
from autooptimizer.search import metric_names as m
from autooptimizer.settings import Settings


# Where the service appends feedback (first that exists wins); see autooptimizer/search/app.py.
def ndcg_at_10(served: list[str], judgments: dict[str, float]) -> float:
    """NDCG@10 of one served ranking, with the service's formula (linear gain, as ir_measures); 0 when nothing
    is judged relevant."""
    from autooptimizer.search.metrics_eval import ndcg10_ranking

    value = ndcg10_ranking(served, {d: int(g) for d, g in judgments.items()})
    return 0.0 if value is None else value


def record_time(rec: dict[str, Any]) -> float | None:
    """A feedback record's time in epoch seconds (`ts`, `timestamp` or `time`: a number or ISO 8601); None when
    it has none (retention's age cut reads it the same way)."""
    for key in ("ts", "timestamp", "time"):
        v = rec.get(key)
        if isinstance(v, int | float):
            return float(v)
        if isinstance(v, str):
            try:
                from datetime import datetime

                return datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()
            except ValueError:
                return None
    return None


def _latency(rec: dict[str, Any]) -> float | None:
    v = rec.get("latency_ms")
    return float(v) if isinstance(v, int | float) and math.isfinite(v) and v >= 0 else None


def _ndcg(rec: dict[str, Any]) -> float | None:
    for key in ("ndcg10", "ndcg@10", "ndcg"):
        if isinstance(rec.get(key), int | float):
            return float(rec[key])
    served = rec.get("served")
    judgments = rec.get("judgments")
    if isinstance(served, list) and isinstance(judgments, dict):
        ids = [_doc_id(s) for s in cast("list[Any]", served)]
        return ndcg_at_10([i for i in ids if i], cast("dict[str, float]", judgments))
    return None


def _doc_id(served: Any) -> Any:
    """A served entry is the doc id itself or an object with `doc_id`; anything else has none (None)."""
    if isinstance(served, str):
        return served
    return cast("dict[str, Any]", served).get("doc_id") if isinstance(served, dict) else None


class FeedbackLog:
    """Tails the feedback JSONL incrementally (keeps an offset), so polling stays cheap as the log grows.

    Retention (loop/retention.trim_log) replaces the file by a suffix of itself plus what was appended meanwhile.
    The tail remembers the last line it read; when the bytes just before its offset are no longer that line, the
    file was trimmed, and it finds the line again in the new file and goes on right after it: no record is read
    twice or skipped (unless the trim cut records this tail had not read yet: those are gone, and it reads from
    the start of the new file). Rows older than the new file's first record are dropped from memory too, so a
    long-lived tail (the optimizer service's) holds what the file holds, not everything it ever read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._last = b""  # the last whole line read (with its newline)
        self._rows: list[tuple[float, str, float | None, float | None]] = []  # ts, version, ndcg, latency_ms

    def _read_new(self) -> None:
        if not self.path.is_file():
            return
        with self.path.open("rb") as fh:
            if self._last and not self._in_place(fh):
                self._offset = self._resync(fh)
            fh.seek(self._offset)
            chunk = fh.read()
        end = chunk.rfind(b"\n")
        if end < 0:
            return
        self._offset += end + 1
        lines = chunk[: end + 1].splitlines(keepends=True)
        self._last = lines[-1]
        for line in lines:
            self._parse(line)

    def _in_place(self, fh: BinaryIO) -> bool:
        """The bytes before the offset are still the last line read: the file was only appended to."""
        start = self._offset - len(self._last)
        if start < 0:
            return False
        fh.seek(start)
        return fh.read(len(self._last)) == self._last

    def _resync(self, fh: BinaryIO) -> int:
        """The offset right after the last line read, in a trimmed file (0 when that line was cut away too), and
        the rows of records the trim removed dropped. The new file is a suffix of the old one plus appends, so the
        line sits at or before its old offset (records carry a request id and a time: a line is unique)."""
        fh.seek(0)
        first = fh.readline()
        fh.seek(0)
        data = fh.read(self._offset)  # the line ends at or before its old offset
        at = (b"\n" + data).rfind(b"\n" + self._last)
        try:
            rec = json.loads(first) if first else None
        except ValueError:
            rec = None
        since = record_time(cast("dict[str, Any]", rec)) if isinstance(rec, dict) else None
        if since is not None:
            self._rows = [r for r in self._rows if r[0] >= since]
        return at + len(self._last) if at >= 0 else 0

    def _parse(self, line: bytes) -> None:
        try:
            rec = json.loads(line)
        except ValueError:
            return
        if not isinstance(rec, dict):
            return
        rec = cast("dict[str, Any]", rec)
        ts, version, value = record_time(rec), rec.get("model_version"), _ndcg(rec)
        if value is not None and not math.isfinite(value):
            value = None
        latency = _latency(rec)
        if ts is not None and isinstance(version, str) and (value is not None or latency is not None):
            self._rows.append((ts, version, value, latency))

    def _column(self, col: Literal[2, 3], model_version: str, since: float, until: float | None) -> list[float]:
        self._read_new()
        end = math.inf if until is None else until
        values = [row[2] if col == 2 else row[3] for row in self._rows
                  if row[1] == model_version and since <= row[0] < end]
        return [v for v in values if v is not None]

    def samples(self, model_version: str, since: float, until: float | None = None) -> list[float]:
        """Per-request NDCG@10 of `model_version` with since <= ts < until."""
        return self._column(2, model_version, since, until)

    def latencies(self, model_version: str, since: float, until: float | None = None) -> list[float]:
        """Per-request server latencies (ms) of `model_version` with since <= ts < until."""
        return self._column(3, model_version, since, until)


class GuardReading(BaseModel):
    """One version's guard values since a test started; None = could not be read."""

    p95_latency_ms: float | None = None
    error_rate: float | None = None
    requests: float | None = None


class PrometheusGuards:
    """p95 latency (ms), error rate and request count of one model version since `since`, read from Prometheus
    through the project's one PromQL reader (`autooptimizer.promql`, prometheus-api-client)."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _scalar(self, promql: str) -> float | None:
        from autooptimizer.promql import query

        return query(promql, self.url, self.timeout).single_value()

    def read(self, model_version: str, since: float) -> GuardReading:
        window = f"{max(5, int(math.ceil(time.time() - since)) + 2)}s"
        sel = f'{{model_version="{model_version}"}}'
        p95 = self._scalar(f"1000 * histogram_quantile(0.95, sum by (le) "
                           f"(increase({m.REQUEST_SECONDS}_bucket{sel}[{window}])))")
        total = self._scalar(f"sum(increase({m.REQUESTS_TOTAL}{sel}[{window}]))")
        # one expression, so errors and requests come from the same evaluation; an unreadable error count is
        # unknown, never zero (the series exists from the version's load on, so "missing" means "cannot read")
        rate = self._scalar(f"sum(increase({m.ERRORS_TOTAL}{sel}[{window}])) / "
                            f"sum(increase({m.REQUESTS_TOTAL}{sel}[{window}]))")
        return GuardReading(p95_latency_ms=p95, error_rate=rate if total else None, requests=total)


class LiveSource:
    """The embedded default's SampleSource: feedback log + Prometheus."""

    def __init__(self, settings: Settings, feedback_path: Path | None = None) -> None:
        self.feedback = FeedbackLog(feedback_path or settings.feedback_log)
        self.guards = PrometheusGuards(settings.prometheus_url)

    def snapshot(self, model_version: str, since: float) -> ArmSnapshot:
        guard = self.guards.read(model_version, since)
        return ArmSnapshot(ndcg=self.feedback.samples(model_version, since),
                           latency_ms=self.feedback.latencies(model_version, since),
                           p95_latency_ms=guard.p95_latency_ms, error_rate=guard.error_rate, requests=guard.requests)
