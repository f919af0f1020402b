"""The soak report: the success table, the end-of-run invariants (pass/fail), and the plots.

`build_report(record)` -> a JSON-safe dict (written as `soak_report.json`); `write_html(report, path)` -> one
self-contained `soak_report.html` with matplotlib plots embedded as base64 SVG. Definitions (what "before" and "after"
mean) are in the functions' docstrings and repeated in the report's `definitions`.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from statistics import median
from typing import Any

from autooptimizer.soak.measure import (
    CycleRow,
    TrafficSample,
    mean_ndcg,
    quarter_change,
    quarter_growth,
    weighted_mean,
)

TOLERANCE = 0.01  # NDCG@10: a repaired domain, the original domain and gold may lose at most this (the bar)
MAX_GROWTH = 0.10  # disk and RSS: last quarter over second quarter
CLEAN_END = {"promoted", "rolled_back", "kept", "scaled", "variant_switched", "restarted", "no_action", "no_remedy",
             "rejected_offline", "ab_failed", "ab_inconclusive", "awaiting_approval", "denied"}
DEFINITIONS = {
    "ndcg_before": "a domain's request-weighted online NDCG@10 from its first traffic until the first promotion that "
                   "ended after it (the whole first segment when none did)",
    "ndcg_after": "the same over the last quarter of the windows in which the domain had traffic",
    "traffic_weighted": "domains weighted by their share of all requests in the run",
    "p95_cost_before_after": "median over windows of the window's client p95 / cost per 1K, in the first and the "
                             "last quarter of the run, windows that overlap an injected fault left out",
    "downtime_pct": "failed requests / sent, in %, injected faults included; ticks the simulator could not send "
                    "(every connection busy) count as sent and failed",
    "success_rate": "cycles that ended with an outcome of the loop (not failed or aborted) / cycles",
    "human_actions": "cycles started by anyone but the scheduler and the gates (cli, api, demo); the scenario's "
                     "operator events are listed apart as injected",
}


def _segments(samples: list[TrafficSample], domain: str) -> list[list[TrafficSample]]:
    """Runs of consecutive windows with traffic of `domain`."""
    out: list[list[TrafficSample]] = []
    current: list[TrafficSample] = []
    for s in samples:
        if s.ndcg_n.get(domain):
            current.append(s)
        elif current:
            out.append(current)
            current = []
    if current:
        out.append(current)
    return out


def ndcg_before_after(samples: list[TrafficSample], cycles: list[CycleRow]) -> dict[str, dict[str, Any]]:
    """Per domain: NDCG@10 before (first segment, until the first promotion ending inside it) and after (the last
    quarter of its windows), with request counts."""
    domains = sorted({d for s in samples for d in s.ndcg})
    promotions = sorted(c.t_end for c in cycles if c.outcome == "promoted" and c.t_end is not None)
    out: dict[str, dict[str, Any]] = {}
    for d in domains:
        segs = _segments(samples, d)
        first = segs[0]
        fix = next((t for t in promotions if first[0].t <= t <= first[-1].t), None)
        before_windows = [s for s in first if fix is None or s.t <= fix]
        active = [s for seg in segs for s in seg]
        after_windows = active[-max(1, len(active) // 4):]
        before, n_before = mean_ndcg(before_windows, d)
        after, n_after = mean_ndcg(after_windows, d)
        out[d] = {"before": before, "after": after, "requests_before": n_before, "requests_after": n_after,
                  "requests": sum(s.ndcg_n.get(d, 0) for s in samples)}
    return out


def _quarter(samples: list[TrafficSample], which: str, key: str) -> float | None:
    if not samples:
        return None
    t0, t1 = samples[0].t, samples[-1].t
    span = max(t1 - t0, 1e-9)
    keep = [s for s in samples if not s.fault and getattr(s, key) is not None
            and ((s.t - t0) <= span / 4 if which == "first" else (s.t - t0) >= 3 * span / 4)]
    values = [float(getattr(s, key)) for s in keep]
    return round(median(values), 6) if values else None


def cycle_counts(cycles: list[CycleRow]) -> dict[str, Any]:
    n = len(cycles)
    outcomes: dict[str, int] = {}
    for c in cycles:
        outcomes[c.outcome or "running"] = outcomes.get(c.outcome or "running", 0) + 1
    rollbacks = outcomes.get("rolled_back", 0)
    clean = sum(1 for c in cycles if c.outcome in CLEAN_END)
    return {"cycles": n, "scheduled": sum(c.trigger == "schedule" for c in cycles),
            "gate_started": sum(c.trigger == "gate" for c in cycles),
            "retrainings": sum(c.retrained for c in cycles), "promotions": outcomes.get("promoted", 0),
            "rollbacks": rollbacks, "rollbacks_pct": round(100 * rollbacks / n, 2) if n else None,
            "success_rate": round(clean / n, 4) if n else None,
            "human_actions": sum(c.trigger not in ("schedule", "gate") for c in cycles), "outcomes": outcomes}


def success_table(samples: list[TrafficSample], cycles: list[CycleRow], totals: dict[str, int]) -> dict[str, Any]:
    per_domain = ndcg_before_after(samples, cycles)
    weights = {d: float(v["requests"]) for d, v in per_domain.items()}
    sent = totals.get("sent", 0)
    return {
        "ndcg": per_domain,
        "ndcg_traffic_weighted": {
            "before": weighted_mean({d: v["before"] for d, v in per_domain.items() if v["before"] is not None},
                                    weights),
            "after": weighted_mean({d: v["after"] for d, v in per_domain.items() if v["after"] is not None},
                                   weights)},
        "p95_ms": {"before": _quarter(samples, "first", "p95_ms"), "after": _quarter(samples, "last", "p95_ms")},
        "cost_per_1k": {"before": _quarter(samples, "first", "cost_per_1k"),
                        "after": _quarter(samples, "last", "cost_per_1k")},
        "downtime_pct": round(100 * totals.get("failed", 0) / sent, 3) if sent else None,
        "lost_pct": round(100 * totals.get("failed_lost", 0) / sent, 3) if sent else None,
        "counts": cycle_counts(cycles),
    }


def _check(ok: bool | None, value: Any, detail: str) -> dict[str, Any]:
    """None (could not be read) is a failure: missing data never reads as safe."""
    return {"pass": bool(ok), "value": value, "detail": detail}


def invariants(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The issue's end-of-run checks over the report's raw parts (`final`, `totals`, `resources`, `events`)."""
    final = record.get("final") or {}
    cons = final.get("consistency") or {}
    audit = final.get("audit") or {}
    jour = final.get("journal") or {}
    totals = record.get("totals") or {}
    out: dict[str, dict[str, Any]] = {
        "aliases_agree": _check(cons.get("agree"), {k: cons.get(k) for k in ("champion", "desired", "serving")},
                                cons.get("error") or "git's desired state = what the service serves = champion"),
        "audit_verify": _check(audit.get("ok"), audit.get("records"), audit.get("problem") or "the whole chain"),
        "no_lost_requests": _check(totals.get("failed_lost") == 0 if totals else None, totals.get("failed_lost"),
                                   "failed requests outside every injected fault's window"),
        "journal_closed": _check(not jour.get("running") and not jour.get("dirty") if jour else None, jour,
                                 "no cycle running or with undone deployment changes at the end"),
    }
    off = final.get("offline")
    if off is None:
        out["repaired_domains_held"] = _check(None, None, "offline evaluation not run")
        out["original_not_regressed"] = _check(None, None, "offline evaluation not run")
    else:
        out["repaired_domains_held"] = _domains_check(off)
        out["original_not_regressed"] = _original_check(off, record)
    out["disk_growth"] = _growth_check([(r["t"], r["disk_bytes"]) for r in record.get("resources", [])], "disk")
    folders = disk_change_by_folder(record.get("resources", []))
    out["disk_growth"]["by_folder_mib"] = folders
    if folders:  # the HTML and CLI tables show the detail: what the growth is made of
        out["disk_growth"]["detail"] += "; by folder, MiB: " + ", ".join(
            f"{k} {v:+g}" for k, v in sorted(folders.items(), key=lambda kv: -abs(kv[1])))
    roles = sorted({k for r in record.get("resources", []) for k in r["rss_bytes"]} - {"harness"})
    growth = {role: quarter_growth([(r["t"], r["rss_bytes"][role]) for r in record.get("resources", [])
                                    if role in r["rss_bytes"]]) for role in roles}
    bad = {k: v for k, v in growth.items() if v is None or v >= MAX_GROWTH}
    out["rss_growth"] = _check(bool(growth) and not bad, growth,
                               f"every product process: last quarter < {MAX_GROWTH:.0%} over the second"
                               + (f"; over or unreadable: {sorted(bad)}" if bad else ""))
    kills = [e for e in record.get("events", []) if e.get("kind") == "optimizer_kill"]
    if kills:
        by = [e.get("restarted_by") for e in kills]
        out["optimizer_recovered"] = _check(all(b == "supervisor" for b in by), by,
                                            "after each SIGKILL the optimizer came back without the harness")
    return out


def _domains_check(off: dict[str, Any]) -> dict[str, Any]:
    rows = off.get("domains") or {}
    if off.get("error"):
        return _check(None, None, off["error"])
    bad = {d: r for d, r in rows.items() if r.get("final") is None or r["final"] < r["best_promoted"] - TOLERANCE}
    value = {d: {"final": r.get("final"), "best_promoted": r["best_promoted"]} for d, r in rows.items()}
    detail = (f"held-out NDCG@10 of the champion >= best promoted - {TOLERANCE}" if rows
              else "no domain was repaired (nothing promoted): nothing to hold")
    return _check(not bad, value, detail + (f"; below: {sorted(bad)}" if bad else ""))


def _original_check(off: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    orig = off.get("original") or {}
    champ, gold = orig.get("champion"), orig.get("gold")
    gold_now = ((record.get("final") or {}).get("consistency") or {}).get("gold")
    gold_start = (record.get("setup") or {}).get("gold_at_start")
    ok = champ is not None and gold is not None and champ >= gold - TOLERANCE and gold_now == gold_start
    return _check(ok, orig, orig.get("error") or f"champion on {orig.get('dataset')} {orig.get('split')} >= gold - "
                  f"{TOLERANCE}, and the gold alias unmoved ({gold_start} -> {gold_now})")


def disk_change_by_folder(resources: list[dict[str, Any]]) -> dict[str, float]:
    """MiB each top-level folder of the home changed by, last quarter's mean - second quarter's (what a disk growth
    is made of); folders that changed by less than 0.05 MiB are left out."""
    folders = sorted({f for r in resources for f in r.get("disk_by_folder") or {}})
    out: dict[str, float] = {}
    for folder in folders:
        change = quarter_change([(r["t"], (r.get("disk_by_folder") or {}).get(folder, 0)) for r in resources
                                 if r.get("disk_by_folder")])
        if change is not None and abs(change) >= 0.05 * 2**20:
            out[folder] = round(change / 2**20, 2)
    return out


def _growth_check(points: list[tuple[float, float]], what: str) -> dict[str, Any]:
    g = quarter_growth(points)
    return _check(g is not None and g < MAX_GROWTH, g,
                  f"{what}: last quarter < {MAX_GROWTH:.0%} over the second" + ("" if g is not None else
                                                                               " (too few samples to tell)"))


def build_report(rec: Any) -> dict[str, Any]:
    """The JSON report from a SoakRecord."""
    sc = rec.scenario
    traffic: list[TrafficSample] = rec.traffic
    report: dict[str, Any] = {
        "scenario": {"name": sc.name, "description": sc.description, "original": sc.original,
                     "domains": sc.datasets(), "simulated_days": round(sc.duration / 86400, 3),
                     "scheduled_cycles_due": sc.scheduled_cycles(), "events": sc.counts()},
        "env": rec.options.env, "speed": rec.speed, "wall_seconds": rec.wall_seconds, "run_dir": str(rec.run_dir),
        "error": rec.error, "setup": rec.setup, "totals": rec.totals, "lost_examples": rec.lost_examples,
        "success": success_table(traffic, rec.cycles, rec.totals),
        "final": rec.final, "events": rec.events, "definitions": DEFINITIONS,
        "cycles": [c.model_dump() for c in rec.cycles],
        "traffic": [s.model_dump() for s in traffic],
        "resources": [r.model_dump() for r in rec.resources],
    }
    report["invariants"] = invariants(report)
    report["ok"] = rec.error is None and all(v["pass"] for v in report["invariants"].values())
    return report


# -- HTML ---------------------------------------------------------------------------------------------------------
OUTCOME_COLOURS = {"promoted": "tab:green", "rolled_back": "tab:red", "failed": "black", "aborted": "black",
                   "no_action": "lightgrey", "scaled": "tab:cyan", "variant_switched": "tab:olive"}


def _svg(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def _img(svg: bytes) -> str:
    return f'<img alt="plot" src="data:image/svg+xml;base64,{base64.b64encode(svg).decode()}"/>'


def _axis(report: dict[str, Any]) -> tuple[float, str]:
    """(simulated seconds per unit, label): days for a long timeline, hours or minutes for a short one."""
    days = report["scenario"]["simulated_days"]
    if days >= 2:
        return 86400.0, "simulated day"
    return (3600.0, "simulated hour") if days * 24 >= 2 else (60.0, "simulated minute")


def plot_ndcg(report: dict[str, Any]) -> bytes:
    """Online NDCG@10 per domain over (simulated) days; every cycle a vertical line coloured by outcome."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    unit, label = _axis(report)
    speed = report["speed"] / unit
    fig, ax = plt.subplots(figsize=(11, 4))
    traffic = [TrafficSample(**s) for s in report["traffic"]]
    for d in sorted({d for s in traffic for d in s.ndcg}):
        pts = [(s.t * speed, s.ndcg[d]) for s in traffic if d in s.ndcg]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], ".-", ms=3, lw=1, label=d)
    seen: set[str] = set()
    for c in report["cycles"]:
        if c.get("t_end") is None:
            continue
        outcome = c.get("outcome") or "running"
        colour = OUTCOME_COLOURS.get(outcome, "tab:orange")
        ax.axvline(c["t_end"] * speed, color=colour, lw=0.8 if outcome == "no_action" else 1.5,
                   alpha=0.6, label=None if outcome in seen else f"cycle: {outcome}")
        seen.add(outcome)
    ax.set_xlabel(label)
    ax.set_ylabel("online NDCG@10")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3)
    return _svg(fig)


def plot_latency_cost(report: dict[str, Any]) -> bytes:
    import matplotlib.pyplot as plt

    unit, label = _axis(report)
    speed = report["speed"] / unit
    traffic = report["traffic"]
    fig, ax = plt.subplots(figsize=(11, 3.5))
    days = [s["t"] * speed for s in traffic]
    ax.plot(days, [s["p95_ms"] for s in traffic], color="tab:blue", lw=1, label="p95 ms (client)")
    ax.set_ylabel("p95 latency, ms")
    ax.set_xlabel(label)
    ax2 = ax.twinx()
    ax2.plot(days, [s["cost_per_1k"] for s in traffic], color="tab:purple", lw=1, label="cost per 1K requests")
    ax2.set_ylabel("$ per 1K requests")
    for e in report["events"]:
        if e.get("kind") not in (None, "phase", "shift", "return"):
            ax.axvline(e["sim_t"] / unit, color="grey", ls=":", lw=1)
    fig.legend(fontsize=7, loc="upper right")
    return _svg(fig)


def plot_resources(report: dict[str, Any]) -> bytes:
    import matplotlib.pyplot as plt

    unit, label = _axis(report)
    speed = report["speed"] / unit
    res = report["resources"]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 3.5))
    days = [r["t"] * speed for r in res]
    ax.plot(days, [r["disk_bytes"] / 2**20 for r in res], label="disk under AUTOOPT_HOME")
    ax.plot(days, [r["audit_bytes"] / 2**20 for r in res], label="audit log")
    ax.set_ylabel("MiB")
    ax.set_xlabel(label)
    ax.legend(fontsize=7)
    for role in sorted({k for r in res for k in r["rss_bytes"]}):
        ax2.plot(days, [r["rss_bytes"].get(role, 0) / 2**20 for r in res], label=f"RSS {role}")
    ax2.set_ylabel("MiB")
    ax2.set_xlabel(label)
    ax2.legend(fontsize=7)
    return _svg(fig)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def _table(rows: list[list[Any]], head: list[str]) -> str:
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{cells}</tr>{body}</table>"


def success_html(report: dict[str, Any]) -> str:
    s = report["success"]
    rows = [[f"NDCG@10 {d}", v["before"], v["after"]] for d, v in s["ndcg"].items()]
    rows += [["NDCG@10 traffic-weighted", s["ndcg_traffic_weighted"]["before"], s["ndcg_traffic_weighted"]["after"]],
             ["p95 latency, ms", s["p95_ms"]["before"], s["p95_ms"]["after"]],
             ["cost per 1K requests, $", s["cost_per_1k"]["before"], s["cost_per_1k"]["after"]]]
    c = s["counts"]
    counts = [["downtime (% failed requests)", s["downtime_pct"]], ["lost (% outside injected faults)", s["lost_pct"]],
              ["cycles", c["cycles"]], ["  scheduled / gate-started", f"{c['scheduled']} / {c['gate_started']}"],
              ["retrainings", c["retrainings"]], ["promotions", c["promotions"]],
              ["rollbacks", f"{c['rollbacks']} ({_fmt(c['rollbacks_pct'])} %)"],
              ["success rate", c["success_rate"]], ["human actions", c["human_actions"]]]
    return _table(rows, ["", "before", "after"]) + _table(counts, ["count", "value"])


PLOTS = {"ndcg": plot_ndcg, "latency_cost": plot_latency_cost, "resources": plot_resources}


def write_html(report: dict[str, Any], path: Path) -> Path:
    """One self-contained page: summary, invariants, success table, plots, cycles and events; the plots are also
    written beside it as `soak_<name>.svg` (for docs)."""
    svgs = {name: fn(report) for name, fn in PLOTS.items()}
    for name, svg in svgs.items():
        path.with_name(f"soak_{name}.svg").write_bytes(svg)
    inv = [[k, "PASS" if v["pass"] else "FAIL", json.dumps(v["value"], default=str)[:200], v["detail"]]
           for k, v in report["invariants"].items()]
    cycles = [[c["id"], c["trigger"], c["gate"], c["outcome"], c["t_start"], c["t_end"], c.get("domain"),
               (c.get("reason") or "")[:120]] for c in report["cycles"]]
    events = [[e["t"], round(e["sim_t"] / 86400, 2), e["label"], e.get("error") or ""] for e in report["events"]]
    sc = report["scenario"]
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>soak {html.escape(sc['name'])}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}} .ok{{color:green}} .bad{{color:red}}
</style></head><body>
<h1>Soak: {html.escape(sc['name'])} <span class="{'ok' if report['ok'] else 'bad'}">
{'all invariants hold' if report['ok'] else 'FAILED'}</span></h1>
<p>{html.escape(sc['description'])}. Env {html.escape(report['env'])}, speed {report['speed']:g},
{sc['simulated_days']} simulated days in {report['wall_seconds']:.0f} s of wall time;
{sc['scheduled_cycles_due']} interval cycles due. {html.escape(report.get('error') or '')}</p>
<h2>Invariants</h2>{_table(inv, ['check', 'result', 'value', 'what'])}
<h2>Success table</h2>{success_html(report)}
<h2>Online NDCG@10 per domain, cycles by outcome</h2>{_img(svgs['ndcg'])}
<h2>p95 latency and cost per 1K requests (dotted: injected events)</h2>{_img(svgs['latency_cost'])}
<h2>Disk and RSS</h2>{_img(svgs['resources'])}
<h2>Cycles (from the journal)</h2>{_table(cycles, ['id', 'trigger', 'gate', 'outcome', 't start s', 't end s',
                                                    'domain', 'reason'])}
<h2>Events played</h2>{_table(events, ['t s', 'day', 'event', 'error'])}
<h2>Definitions</h2><ul>{''.join(f'<li><b>{k}</b>: {html.escape(v)}</li>' for k, v in DEFINITIONS.items())}</ul>
</body></html>"""
    path.write_text(page)
    return path


def write_report(rec: Any) -> tuple[dict[str, Any], Path, Path]:
    """soak_report.json and soak_report.html in the run's folder."""
    report = build_report(rec)
    out = Path(rec.run_dir)
    json_path = out / "soak_report.json"
    json_path.write_text(json.dumps(report, indent=1, default=str))
    html_path = write_html(report, out / "soak_report.html")
    return report, json_path, html_path
