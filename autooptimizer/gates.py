"""The four quality gates, evaluated live against Prometheus through `autooptimizer.promql` (prometheus-api-client).

| gate          | value (PromQL below)                                      | fires when        |
|---------------|-----------------------------------------------------------|-------------------|
| `ndcg_drop`   | % drop of online NDCG@10 (window W) vs the baseline window | value >= ndcgDropPct |
| `p95_latency` | p95 of /search latency over W, in ms                      | value > p95LatencyMs |
| `cost_budget` | spend rate over W, projected to an hour, as % of budget   | value > costBudgetPct |
| `retries`     | retries per operation within W (max over operations)      | value > maxRetries |

NDCG baselines: the gate's value is the larger of two drops, and its evidence (`evidence.anchor`) records both and
which one fired (`fired_by`):
- sliding: vs the mean online NDCG@10 over the `baselineWindowSeconds` that END where the current window starts
  (`offset W`). No stored state; a corpus shift drops the current window below the earlier one within seconds. But it
  slides: a shift the first cycle cannot repair becomes the baseline W + baseline seconds later (docs/benchmarks.md,
  Soak: cran read as "no drop" for the rest of the month), and a shift from one weak domain to an equally weak one
  (cran 0.38 -> cisi 0.376) shows no drop at all.
- anchored: vs the NDCG@10 the current champion reached on healthy traffic (`NdcgAnchor`, loop state kept by the
  scheduler in AUTOOPT_HOME/loop/ndcg_anchor.json, loop/anchor.py). It catches a persistent shortfall. The reader
  passes the anchor in (`evaluate_gates(anchor=...)`); without one (no file, a corrupt one, another champion's,
  a re-anchor pending) the gate is the sliding comparison alone and its evidence says why - the anchor is an
  addition, never a reason for `unknown`.
The anchored drop needs the current window's samples. When the sliding reading is unknown (a baseline window short
of samples, or both windows at a mean of 0: NaN), the anchor may still make the gate fire, never `ok`.

The budget in the profile (`cost.budget`, dollars) is a budget per hour of serving: a burn-rate gate can go back to ok
once an overrun stops, which a cumulative total never could.

A gate is `unknown`, never `ok`, when Prometheus is unreachable or answers an error, the series is missing, the value
is NaN, or the reading rests on fewer samples than the profile's `gates.minSamples` (feedback in the current AND the
baseline window for ndcg_drop; requests in the window for the others): a mean of 12 feedback samples flips a 3 % drop
gate on noise alone (docs/benchmarks.md, "Gate false alarms"). Counts are `floor(sum(increase(...)))` over the
gate's window: `increase` extrapolates to the window's edges (by at most ~1.1 scrape intervals, and not below a
counter's zero), so a count is at least the increments it saw; `floor` keeps the comparison on whole samples.
Every gate carries its PromQL, the raw answer and the counts as evidence. The same expressions feed the recording and
alert rules (`autooptimizer.infra.prometheus`; an alert also needs the counts), so rules and gates agree. For
ndcg_drop the rules carry the sliding drop only (`autoopt:ndcg10_drop:percent`, `AutoOptNdcgDrop`): the anchor is
loop state that changes with the champion, so the anchored comparison is made by the gate reader, and its PromQL
(the current-window mean against the anchor as a constant) is in the gate's evidence.

A single firing reading is not a decision: `GateStreaks` confirms a gate after `gates.consecutiveReadings` firing
readings in a row, and only a confirmed gate starts a cycle (`autooptimizer.loop.scheduler`).
"""

from __future__ import annotations

import math
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from autooptimizer.profiles import Profile, load_profile
from autooptimizer.promql import QueryResult, query
from autooptimizer.search import metric_names as m

GateName = Literal["ndcg_drop", "p95_latency", "cost_budget", "retries"]
GateStatus = Literal["ok", "firing", "unknown"]
GATE_NAMES: tuple[GateName, ...] = ("ndcg_drop", "p95_latency", "cost_budget", "retries")


class SampleCount(BaseModel):
    """A count a gate's reading rests on (feedback or requests in one window), and the minimum the profile sets."""

    key: str = Field(description="short name in evidence.samples: current | baseline | requests")
    what: str = Field(description="for messages, e.g. 'feedback samples in the baseline window (120s)'")
    promql: str
    minimum: int = Field(ge=1)


class GateQuery(BaseModel):
    """One gate's definition: the PromQL giving its value, the comparison that makes it fire, the counts it needs."""

    name: GateName
    promql: str
    threshold: float
    op: Literal[">", ">="]
    unit: str
    record: str = Field(description="recording-rule name that stores the value in Prometheus")
    alert: str = Field(description="alert-rule name that fires with the gate")
    summary: str
    counts: list[SampleCount] = Field(default_factory=list)

    @property
    def alert_expr(self) -> str:
        """The alert rule: the gate's comparison, and every count at its minimum (as the gate judges)."""
        enough = "".join(f" and on() ({c.promql} >= {c.minimum})" for c in self.counts)
        return f"({self.promql} {self.op} {self.threshold:g}){enough}"


AnchorState = Literal["set", "missing", "corrupt", "pending", "other_champion", "no_champion"]


class NdcgAnchor(BaseModel):
    """The NDCG gate's fixed reference: a lower bound of the online NDCG@10 `champion` reached on healthy traffic
    (the baseline window's mean at a healthy reading, minus its worst-case noise). `ndcg10` None: a re-anchor is
    pending (an operator's reset, or the champion changed) and happens at the first healthy reading at or after
    `not_before`. Operators may edit the file: an unknown key (a typo) or a non-finite time fails validation, so
    the edit is reported as corrupt and kept, not read as a pending re-anchor the loop then overwrites."""

    model_config = ConfigDict(extra="forbid")

    champion: str = Field(min_length=1)
    ndcg10: float | None = Field(default=None, gt=0, le=1,
                                 description="the reference the gate compares with: the lower bound of `mean` "
                                             "(loop/anchor.py conservative_level)")
    mean: float | None = Field(default=None, ge=0, le=1, description="the baseline window's mean it was set from")
    samples: int | None = Field(default=None, ge=0, description="feedback samples in the window it was set from")
    set_at: float = Field(allow_inf_nan=False, description="unix time it was set (or the re-anchor was asked for)")
    how: str = Field(description="why it was set, e.g. 'first healthy reading of champion v1 (no anchor)'")
    not_before: float | None = Field(default=None, allow_inf_nan=False,
                                     description="pending only: the earliest time to re-anchor")


class AnchorRead(BaseModel):
    """What a gate reader knows of the anchor now (`autooptimizer.loop.anchor.AnchorStore.read`)."""

    state: AnchorState
    path: str
    champion: str | None = Field(default=None, description="the current `champion` alias")
    anchor: NdcgAnchor | None = None
    error: str | None = Field(default=None, description="corrupt: what is wrong and the fix")

    @property
    def level(self) -> float | None:
        """The anchor level the gate compares with; None unless an anchor is set for the current champion."""
        return self.anchor.ndcg10 if self.state == "set" and self.anchor is not None else None

    def due(self, now: float) -> bool:
        """Should a healthy reading now set the anchor? (no file, or a pending re-anchor whose time has come)."""
        if self.state == "missing":
            return True
        return self.state == "pending" and self.anchor is not None and (self.anchor.not_before or 0.0) <= now

    def note(self) -> str:
        """One sentence for the gate's evidence: which comparison the reading can make, and why."""
        a = self.anchor
        if self.state == "set" and a is not None and a.ndcg10 is not None:
            return (f"anchored at NDCG@10 {a.ndcg10:.4f} for champion {a.champion} ({a.samples} samples; {a.how})")
        return {
            "missing": f"no anchor yet ({self.path}): sliding comparison only until the loop anchors at a healthy "
                       "reading",
            "corrupt": f"{self.error} Sliding comparison only until then.",
            "pending": f"re-anchor pending for champion {a.champion if a else '?'} ({a.how if a else ''}): sliding "
                       "comparison only until a healthy reading sets it",
            "other_champion": f"the anchor is for {a.champion if a else '?'}, the champion is {self.champion}: "
                              "sliding comparison only until the new champion's first healthy reading",
            "no_champion": "no `champion` alias: sliding comparison only",
        }.get(self.state, self.state)


class AnchorEvidence(BaseModel):
    """ndcg_drop only: both comparisons, which fired, and the anchor they used (or why there was none)."""

    state: AnchorState | Literal["not_given"]
    note: str
    path: str | None = None
    champion: str | None = None
    anchor_ndcg10: float | None = None
    anchor_set_at: float | None = None
    anchor_samples: int | None = None
    promql: str | None = Field(default=None, description="the anchored drop: current-window mean vs the anchor")
    raw: Any = None
    error: str | None = Field(default=None, description="why the anchored drop could not be read")
    sliding_drop: float | None = None
    sliding_error: str | None = Field(default=None, description="why the sliding comparison was unknown when the "
                                      "anchor alone fired")
    anchored_drop: float | None = None
    fired_by: list[Literal["sliding", "anchor"]] = Field(default_factory=list[Literal["sliding", "anchor"]])
    baseline_ndcg10: float | None = Field(default=None, description="the baseline window's mean, read when a "
                                          "healthy reading is due to set the anchor (the level it would be set at)")


class Evidence(BaseModel):
    promql: str
    raw: Any = Field(default=None, description="the result list Prometheus returned (or null)")
    error: str | None = None
    samples: dict[str, float | None] = Field(default_factory=dict,
                                             description="count per window (current/baseline/requests); null = "
                                                         "Prometheus could not answer")
    min_samples: int | None = Field(default=None, description="the profile's minimum for this gate")
    anchor: AnchorEvidence | None = Field(default=None, description="ndcg_drop: the sliding and anchored drops")


class Gate(BaseModel):
    name: GateName
    status: GateStatus
    value: float | None = Field(description="the gate's value; null when unknown or not finite")
    threshold: float
    unit: str = ""
    evidence: Evidence


class GateReport(BaseModel):
    gates: list[Gate]
    env: str = "dev"
    prometheus_url: str = ""
    evaluated_at: float = Field(default_factory=time.time)

    def gate(self, name: str) -> Gate:
        for g in self.gates:
            if g.name == name:
                return g
        raise KeyError(name)

    @property
    def firing(self) -> list[str]:
        return [g.name for g in self.gates if g.status == "firing"]

    def public(self) -> dict[str, Any]:
        """The `autoopt gates --json` shape: {"gates": [{name, status, value, threshold, evidence}]}."""
        return {
            "gates": [g.model_dump(include={"name", "status", "value", "threshold", "evidence"}) for g in self.gates]
        }


def _count(key: str, what: str, promql: str, minimum: int) -> SampleCount:
    return SampleCount(key=key, what=what, promql=f"floor(sum(increase({promql})))", minimum=minimum)


def ndcg_means(profile: Profile) -> tuple[str, str]:
    """PromQL of the mean online NDCG@10 over the current window and over the baseline window before it."""
    w, b = f"{profile.gates.window_seconds}s", f"{profile.gates.baseline_window_seconds}s"
    return (f"sum(rate({m.FEEDBACK_NDCG}_sum[{w}])) / sum(rate({m.FEEDBACK_NDCG}_count[{w}]))",
            f"sum(rate({m.FEEDBACK_NDCG}_sum[{b}] offset {w})) / sum(rate({m.FEEDBACK_NDCG}_count[{b}] offset {w}))")


def anchored_drop_promql(profile: Profile, level: float) -> str:
    """The anchored drop in %: the current window's mean NDCG@10 against the anchor `level` as a constant."""
    return f"100 * (1 - ({ndcg_means(profile)[0]}) / {level!r})"


def gate_queries(profile: Profile) -> list[GateQuery]:
    """The four gates' PromQL and thresholds for an environment profile (single source for gates and rules)."""
    g = profile.gates
    w, b = f"{g.window_seconds}s", f"{g.baseline_window_seconds}s"
    low = g.min_samples
    requests = f"requests in the window ({w})"
    fb_now = _count("current", f"feedback samples in the current window ({w})", f"{m.FEEDBACK_NDCG}_count[{w}]",
                    low.ndcg_drop)
    fb_base = _count("baseline", f"feedback samples in the baseline window ({b})",
                     f"{m.FEEDBACK_NDCG}_count[{b}] offset {w}", low.ndcg_drop)
    ndcg_now, ndcg_base = ndcg_means(profile)
    return [
        GateQuery(
            name="ndcg_drop",
            promql=f"100 * (1 - ({ndcg_now}) / ({ndcg_base}))",
            threshold=g.ndcg_drop_pct,
            op=">=",
            unit="% drop",
            record="autoopt:ndcg10_drop:percent",
            alert="AutoOptNdcgDrop",
            summary=f"online NDCG@10 over {w} is >= {g.ndcg_drop_pct}% below the {b} before it",
            counts=[fb_now, fb_base],
        ),
        GateQuery(
            name="p95_latency",
            promql=f"1000 * histogram_quantile(0.95, sum by (le) (rate({m.REQUEST_SECONDS}_bucket[{w}])))",
            threshold=g.p95_latency_ms,
            op=">",
            unit="ms",
            record="autoopt:search_latency_p95:ms",
            alert="AutoOptLatencyP95",
            summary=f"p95 search latency over {w} above {g.p95_latency_ms:g} ms",
            counts=[_count("requests", requests, f"{m.REQUEST_SECONDS}_count[{w}]", low.p95_latency)],
        ),
        GateQuery(
            name="cost_budget",
            promql=f"100 * 3600 * sum(rate({m.COST_TOTAL}[{w}])) / {profile.cost.budget:g}",
            threshold=g.cost_budget_pct,
            op=">",
            unit="% of hourly budget",
            record="autoopt:cost_budget:percent",
            alert="AutoOptCostBudget",
            summary=f"spend rate over {w} above {g.cost_budget_pct:g}% of the {profile.cost.budget:g}/h budget",
            counts=[_count("requests", requests, f"{m.REQUESTS_TOTAL}[{w}]", low.cost_budget)],
        ),
        GateQuery(
            name="retries",
            # The service exports the counter at 0 for every operation from start-up (search/service_metrics.py),
            # so a missing series means a broken exporter or scrape (unknown), never "no retries".
            promql=f"max by (operation) (increase({m.RETRIES_TOTAL}[{w}]))",
            threshold=float(g.max_retries),
            op=">",
            unit="retries",
            record="autoopt:operation_retries:max",
            alert="AutoOptRetries",
            summary=f"an operation retried more than {g.max_retries} times within {w}",
            counts=[_count("requests", requests, f"{m.REQUESTS_TOTAL}[{w}]", low.retries)],
        ),
    ]


def _counted(res: QueryResult) -> float | None:
    """A count query's value: None when Prometheus could not answer or answered a non-finite number; 0 when no series
    had two samples in the window (`increase` needs two, so nothing countable happened)."""
    if not res.ok:
        return None
    values = [s["value"] for s in res.samples]
    if not all(math.isfinite(v) for v in values):
        return None
    return float(sum(values))


def too_few(q: GateQuery, counts: dict[str, float | None]) -> str | None:
    """Why the counts cannot carry a decision (e.g. '12 feedback samples in the baseline window (120s), need 100'),
    or None when every count reaches its minimum. A count below its minimum is named before one that could not be
    read."""
    short = [(c, n) for c in q.counts if (n := counts.get(c.key)) is not None and n < c.minimum]
    if short:
        c, n = short[0]
        return f"{n:.0f} {c.what}, need {c.minimum} (gates.minSamples)"
    missing = [c for c in q.counts if counts.get(c.key) is None]
    if missing:
        return f"could not count the {missing[0].what}: Prometheus gave no finite answer"
    return None


def _judge(q: GateQuery, res: QueryResult, counts: dict[str, float | None] | None = None) -> Gate:
    """ok | firing | unknown for one gate from its value answer and its counts (`counts` None: not checked).
    Order of the reasons for unknown: Prometheus error, no series, too few samples, NaN value, uncountable."""
    ev = Evidence(promql=q.promql, raw=res.raw, error=res.error, samples=counts or {},
                  min_samples=q.counts[0].minimum if q.counts else None)
    unknown = Gate(name=q.name, status="unknown", value=None, threshold=q.threshold, unit=q.unit, evidence=ev)
    if not res.ok:
        return unknown
    if not res.samples:
        ev.error = "no series: the metric is missing or had no samples in the window"
        return unknown
    why = too_few(q, counts) if counts is not None else None
    if why and not why.startswith("could not"):
        ev.error = why
        return unknown
    values = [s["value"] for s in res.samples if not math.isnan(s["value"])]
    if not values:
        ev.error = "NaN: no data in the window to compute the value"
        return unknown
    if why:
        ev.error = why
        return unknown
    value = max(values)
    fires = value >= q.threshold if q.op == ">=" else value > q.threshold
    return Gate(
        name=q.name,
        status="firing" if fires else "ok",
        value=value if math.isfinite(value) else None,
        threshold=q.threshold,
        unit=q.unit,
        evidence=ev,
    )


def read_gate(q: GateQuery, url: str | None = None, timeout: float = 5.0, check_counts: bool = True,
              counted: dict[str, float | None] | None = None) -> Gate:
    """One gate now: its value query, then its count queries (same client path). `counted` (promql -> count) shares
    counts between the gates of one evaluation (cost and retries count the same requests). `check_counts=False`
    judges the value alone but still records the counts (the A/A bench compares both rules on one reading)."""
    counted = {} if counted is None else counted
    res = query(q.promql, url, timeout)
    for c in q.counts:
        if c.promql not in counted:
            counted[c.promql] = _counted(query(c.promql, url, timeout))
    counts = {c.key: counted[c.promql] for c in q.counts}
    if check_counts:
        return _judge(q, res, counts)
    gate = _judge(q, res, None)
    gate.evidence.samples = counts
    return gate


def _finite(res: QueryResult) -> float | None:
    """The largest finite value of an answer, or None (error, no series, NaN or infinite)."""
    values = [s["value"] for s in res.samples if math.isfinite(s["value"])] if res.ok else []
    return max(values) if values else None


def anchor_ndcg(gate: Gate, profile: Profile, read: AnchorRead | None, url: str, timeout: float = 5.0,
                now: float | None = None) -> Gate:
    """The ndcg_drop gate with its anchored comparison: value = max(sliding drop, anchored drop), firing when either
    reaches the threshold. Without a usable anchor, or when the anchored query gives no finite answer, the sliding
    reading stands alone and `evidence.anchor` says why. An unknown sliding reading can only become firing
    (`_anchor_only`). When a healthy reading is due to set the anchor, the baseline mean is read too."""
    now = time.time() if now is None else now
    if read is None:
        gate.evidence.anchor = AnchorEvidence(state="not_given", note="this reader was given no anchor: sliding "
                                              "comparison only", sliding_drop=gate.value)
        return gate
    a = read.anchor
    ev = AnchorEvidence(state=read.state, note=read.note(), path=read.path, champion=read.champion,
                        anchor_ndcg10=read.level, anchor_set_at=a.set_at if a and read.level else None,
                        anchor_samples=a.samples if a and read.level else None, sliding_drop=gate.value)
    gate.evidence.anchor = ev
    if gate.status == "unknown":
        return _anchor_only(gate, ev, profile, read, url, timeout)
    ev.fired_by = ["sliding"] if gate.status == "firing" else []
    if gate.status == "ok" and read.due(now):
        ev.baseline_ndcg10 = _finite(query(ndcg_means(profile)[1], url, timeout))
    if read.level is None:
        return gate
    ev.promql = anchored_drop_promql(profile, read.level)
    res = query(ev.promql, url, timeout)
    ev.raw = res.raw
    anchored = _finite(res)
    if anchored is None:
        ev.error = (res.error or "no finite answer") + ": sliding comparison only"
        return gate
    ev.anchored_drop = anchored
    if anchored >= gate.threshold:
        ev.fired_by.append("anchor")
    gate.value = max(v for v in (gate.value, anchored) if v is not None)
    gate.status = "firing" if ev.fired_by else "ok"
    return gate


def _anchor_only(gate: Gate, ev: AnchorEvidence, profile: Profile, read: AnchorRead, url: str,
                 timeout: float) -> Gate:
    """A sliding reading that is unknown (a baseline window short of samples, or a baseline mean of 0: NaN) may
    still fire on the anchor when the current window has its samples; it never turns ok (the sliding part is not
    known), and its reason moves to `evidence.anchor.sliding_error`."""
    current, minimum = gate.evidence.samples.get("current"), gate.evidence.min_samples
    if read.level is None or current is None or minimum is None or current < minimum:
        ev.note += "; not compared: the sliding reading is unknown"
        return gate
    ev.promql = anchored_drop_promql(profile, read.level)
    res = query(ev.promql, url, timeout)
    ev.raw, ev.anchored_drop = res.raw, _finite(res)
    if ev.anchored_drop is None or ev.anchored_drop < gate.threshold:
        ev.note += "; the anchored drop does not fire and the sliding reading is unknown: unknown"
        return gate
    ev.fired_by, ev.sliding_error = ["anchor"], gate.evidence.error
    gate.evidence.error = None
    return gate.model_copy(update={"status": "firing", "value": ev.anchored_drop})


def evaluate_gates(
    prometheus_url: str | None = None, env: str | None = None, profile: Profile | None = None, timeout: float = 5.0,
    anchor: AnchorRead | None = None, now: float | None = None,
) -> GateReport:
    """Evaluate all four gates now. Thresholds and windows come from the environment profile; `anchor` is the NDCG
    anchor as the caller read it (loop/anchor.py; None: the sliding comparison only)."""
    from autooptimizer.settings import get_settings

    settings = get_settings()
    env = env or settings.env
    profile = profile or load_profile(env)
    url = prometheus_url or settings.prometheus_url
    counted: dict[str, float | None] = {}
    gates = [read_gate(q, url, timeout, counted=counted) for q in gate_queries(profile)]
    gates = [anchor_ndcg(g, profile, anchor, url, timeout, now) if g.name == "ndcg_drop" else g for g in gates]
    return GateReport(gates=gates, env=env, prometheus_url=url)


class GateStreaks(BaseModel):
    """Consecutive firing readings per gate. A gate is confirmed once it has fired on `required` readings in a row;
    an `ok` or `unknown` reading (or a gate missing from a report) resets its streak to 0. Same rule as Flagger's
    `threshold` and Argo Rollouts' `failureLimit`: one noisy reading must not start a retrain."""

    required: int = Field(ge=1)
    streak: dict[str, int] = Field(default_factory=lambda: {name: 0 for name in GATE_NAMES})

    def update(self, report: GateReport) -> list[GateName]:
        """Count one reading; returns the confirmed gates (streak >= required), in GATE_NAMES order."""
        status = {g.name: g.status for g in report.gates}
        for name in GATE_NAMES:
            self.streak[name] = self.streak.get(name, 0) + 1 if status.get(name) == "firing" else 0
        return self.confirmed()

    def confirmed(self) -> list[GateName]:
        return [name for name in GATE_NAMES if self.streak.get(name, 0) >= self.required]

    def reset(self, name: str | None = None) -> None:
        """Start counting again (after a cycle was started for `name`, or for every gate)."""
        for key in [name] if name else list(self.streak):
            self.streak[key] = 0
