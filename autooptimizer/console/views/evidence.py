"""A cycle's evidence artifacts read for display: the diagnostic report (SHAP/LIME token attributions), the offline
evaluation and the A/B result. Each reader takes the cycle's artifacts folder (AUTOOPT_HOME/artifacts/<cycle>) and
returns None when the file is absent, or the view with `error` set when the file is there but unreadable.

Shapes come from the writers' own models: `ml.diagnose.DiagnosticReport`, `loop.abtest.ABResult`, and the dict
`loop.retrain._evaluate` writes.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from autooptimizer.console.charts import HistPlot, IntervalPlot, histogram, interval

LEVELS = 5  # attribution strength classes: w-pos-1..5 / w-neg-1..5
_TERM = re.compile(r"[a-z][a-z0-9]+")  # content terms, as ml.diagnose._tokens splits them


class Token(BaseModel):
    text: str
    value: float
    level: int = Field(description="0..LEVELS: |value| relative to the query's largest |value|")
    sign: str = Field(description="pos | neg | zero")
    under_weighted: bool


class ExplainedQuery(BaseModel):
    query_key: str
    query: str
    doc_id: str
    served_ndcg10: float | None
    score: float
    method: str
    tokens: list[Token]
    under_weighted: list[str]


class DiagnosticView(BaseModel):
    model_version: str = ""
    explainer: str = ""
    verdict: str = ""
    evidence: list[str] = Field(default_factory=list)
    under_weighted_terms: list[tuple[str, int]] = Field(default_factory=list)
    queries: list[ExplainedQuery] = Field(default_factory=list)
    jsd: float | None = None
    oov_share: float | None = None
    other: dict[str, Any] | None = Field(default=None, description="a report of another shape (the retries path)")
    error: str | None = None


def _load(path: Path) -> tuple[Any, str | None]:
    try:
        return json.loads(path.read_text()), None
    except (OSError, ValueError) as exc:
        return None, f"{path.name} could not be read: {exc}"


def read_diagnostic(folder: Path) -> DiagnosticView | None:
    """The report with each query's tokens classed for highlighting (sign and strength of the attribution)."""
    from autooptimizer.ml.diagnose import DiagnosticReport

    path = folder / "diagnostic_report.json"
    if not path.is_file():
        return None
    raw, error = _load(path)
    if error:
        return DiagnosticView(error=error)
    if not isinstance(raw, dict) or "explainer" not in raw:  # the retries path writes its own evidence report
        other = raw if isinstance(raw, dict) else {"report": raw}
        return DiagnosticView(other=other, verdict=str(other.get("action", "")))
    try:
        report = DiagnosticReport.model_validate(raw)
    except ValidationError as exc:
        return DiagnosticView(error=f"diagnostic_report.json does not match the report model: {exc.errors()[:2]}")
    queries = []
    for q in report.queries:
        peak = max((abs(a.value) for a in q.attributions), default=0.0) or 1.0
        uw = set(q.under_weighted)
        tokens = [Token(text=a.token, value=a.value, level=min(LEVELS, math.ceil(abs(a.value) / peak * LEVELS)),
                        sign="pos" if a.value > 0 else "neg" if a.value < 0 else "zero",
                        under_weighted=bool(uw & set(_TERM.findall(a.token.lower()))))
                  for a in q.attributions]
        queries.append(ExplainedQuery(query_key=q.query_key, query=q.query, doc_id=q.doc_id,
                                      served_ndcg10=q.served_ndcg10, score=q.score, method=q.method,
                                      tokens=tokens, under_weighted=q.under_weighted))
    return DiagnosticView(model_version=report.model_version, explainer=report.explainer, verdict=report.verdict,
                          evidence=report.evidence, under_weighted_terms=report.under_weighted_terms,
                          queries=queries, jsd=report.term_shift.jsd, oov_share=report.term_shift.oov_share)


class EvalRow(BaseModel):
    role: str
    version: str | None
    same_as: str | None = None
    scores: dict[str, float | None] = Field(default_factory=dict, description="domain column -> NDCG@10")
    mrr10: float | None = None
    recall100: float | None = None


class EvaluationView(BaseModel):
    domains: list[str] = Field(default_factory=list, description="column titles, e.g. 'cran holdout (113 q)'")
    rows: list[EvalRow] = Field(default_factory=list)
    promotable: bool | None = None
    reasons: list[str] = Field(default_factory=list)
    error: str | None = None


def read_evaluation(folder: Path) -> EvaluationView | None:
    """Champion, challenger and gold: NDCG@10 per domain (the new domain's holdout, the original's test split)."""
    path = folder / "evaluation.json"
    if not path.is_file():
        return None
    raw, error = _load(path)
    if error or not isinstance(raw, dict):
        return EvaluationView(error=error or "evaluation.json is not an object")
    hold = raw.get("holdout") or {}
    new = f"{Path(str(hold.get('folder', 'new domain'))).name} holdout ({hold.get('queries', '?')} q)"
    orig = str(raw.get("original", "original"))
    rows = []
    for role in ("champion", "challenger", "gold"):
        side = raw.get(role) or {}
        if not isinstance(side, dict):
            continue
        rows.append(EvalRow(role=role, version=side.get("version"), same_as=side.get("same_as"),
                            scores={new: side.get("new_domain_ndcg@10"), orig: side.get("original_ndcg@10")},
                            mrr10=side.get("new_domain_mrr@10"), recall100=side.get("new_domain_recall@100")))
    return EvaluationView(domains=[new, orig], rows=rows, promotable=raw.get("promotable"),
                          reasons=[str(r) for r in raw.get("reasons") or []])


class Guard(BaseModel):
    name: str
    status: str
    detail: str


class ABView(BaseModel):
    verdict: str = ""
    reasons: list[str] = Field(default_factory=list)
    arms: list[dict[str, Any]] = Field(default_factory=list)
    quality: dict[str, Any] = Field(default_factory=dict)
    hist: HistPlot | None = None
    hist_source: str = ""
    ci: IntervalPlot | None = None
    guards: list[Guard] = Field(default_factory=list)
    started_at: str | None = None
    duration_seconds: float | None = None
    stopped_by: str | None = None
    error: str | None = None


def read_ab(folder: Path, feedback_log: Path | None = None) -> ABView | None:
    """The A/B verdict with its per-arm NDCG@10 distributions, the CI of the difference, p-values and guards.
    Distributions come from the artifact (`ndcg_histogram`); an older artifact without them is completed from the
    feedback log the judge read, over the test's own window."""
    from autooptimizer.loop.abtest import NDCG_BINS, ABResult

    path = folder / "ab_test_results.json"
    if not path.is_file():
        return None
    raw, error = _load(path)
    if error:
        return ABView(error=error)
    try:
        ab = ABResult.model_validate(raw)
    except ValidationError as exc:
        return ABView(error=f"ab_test_results.json does not match the A/B model: {exc.errors()[:2]}")
    counts = {"control": ab.control.ndcg_histogram, "treatment": ab.treatment.ndcg_histogram}
    source = "ab_test_results.json"
    if (counts["control"] is None or counts["treatment"] is None) and feedback_log and ab.started_at:
        counts, source = _from_feedback(ab, feedback_log, NDCG_BINS), "the feedback log over the test window"
    arms = [(arm, stats.model_version, counts[arm] or []) for arm, stats in
            (("control", ab.control), ("treatment", ab.treatment))]
    q = ab.quality
    view = ABView(verdict=ab.verdict, reasons=ab.reasons, quality=q.model_dump(), started_at=ab.started_at,
                  duration_seconds=ab.duration_seconds, stopped_by=ab.stopped_by,
                  arms=[{"arm": arm, **stats.model_dump()} for arm, stats in
                        (("control", ab.control), ("treatment", ab.treatment))],
                  hist=histogram(arms) if all(c for _, _, c in arms) else None, hist_source=source,
                  guards=_guards(ab))
    if q.delta_mean is not None and q.ci_low is not None and q.ci_high is not None:
        view.ci = interval(q.delta_mean, q.ci_low, q.ci_high)
    return view


def _from_feedback(ab: Any, log: Path, bins: int) -> dict[str, list[int] | None]:
    from datetime import datetime

    from autooptimizer.loop.signals import FeedbackLog

    since = datetime.fromisoformat(ab.started_at).timestamp()
    until = datetime.fromisoformat(ab.finished_at).timestamp() if ab.finished_at else None
    fb = FeedbackLog(log)
    out: dict[str, list[int] | None] = {}
    for arm, stats in (("control", ab.control), ("treatment", ab.treatment)):
        values = fb.samples(stats.model_version, since, until)
        counts = [0] * bins
        for v in values:
            counts[min(bins - 1, max(0, int(v * bins)))] += 1
        out[arm] = counts if values else None
    return out


def _guards(ab: Any) -> list[Guard]:
    """The guard checks the judge applied, each with what it compared."""
    c, t, cfg, lat = ab.control, ab.treatment, ab.config, ab.latency

    def num(v: float | None, fmt: str = ".1f") -> str:
        return "unknown" if v is None else format(v, fmt)

    p95 = t.p95_latency_ms if t.p95_latency_ms is not None else t.p95_latency_sample_ms
    out = [Guard(name="latency shift (Mann-Whitney + Hodges-Lehmann)", status=lat.status,
                 detail=f"median shift {num(lat.shift_ms)} ms, CI [{num(lat.ci_low_ms)}, {num(lat.ci_high_ms)}], "
                        f"allowed {num(lat.allowed_shift_ms)} ms, p(slower) {num(lat.p_value_slower, '.3g')}"),
           Guard(name="p95 latency gate", status="unknown" if p95 is None else "ok" if p95 <= cfg.max_p95_ms
                 else "regressed", detail=f"treatment p95 {num(p95)} ms vs gate {cfg.max_p95_ms:g} ms"),
           Guard(name="error rate", status="unknown" if t.error_rate is None or c.error_rate is None else
                 "ok" if t.error_rate <= c.error_rate + cfg.error_tolerance else "regressed",
                 detail=f"treatment {num(t.error_rate, '.3f')} vs control {num(c.error_rate, '.3f')} "
                        f"+ tolerance {cfg.error_tolerance:g}")]
    return out
