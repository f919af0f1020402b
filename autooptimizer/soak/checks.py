"""The end-of-run reads a soak's invariants rest on, all from the product's own state:

- git's desired state, what the service serves, and the registry's `champion` / `gold` aliases;
- `audit verify` (the whole chain);
- the journal: no cycle left running or with undone deployment changes;
- offline NDCG@10 of the final champion on each repaired domain's fixed evaluation set against the best value a
  watched promotion reached on it (the forgetting guard's record, AUTOOPT_HOME/evalsets, ml/forgetting.py), and of
  the champion and gold on the original domain's test split. Promotions with no readable record fail the check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autooptimizer.soak.measure import CycleRow
from autooptimizer.soak.scenario import Scenario


def consistency() -> dict[str, Any]:
    """git vs service (Release.consistent) and the champion alias vs git's model version."""
    from autooptimizer.loop.release import Release
    from autooptimizer.search import aliases

    out: dict[str, Any] = {"champion": aliases.get_alias(aliases.CHAMPION), "gold": aliases.get_alias(aliases.GOLD)}
    try:
        ok, desired, state = Release().consistent()
        out.update(git_matches_service=ok, desired=desired.model_dump() if desired else None,
                   serving=state.model_dump(exclude_none=True))
        out["agree"] = bool(ok and desired is not None and out["champion"] == desired.model_version)
    except Exception as exc:  # noqa: BLE001 - unreadable is a failed check, never a pass
        out.update(agree=False, error=f"{type(exc).__name__}: {getattr(exc, 'problem', None) or exc}")
    return out


def audit() -> dict[str, Any]:
    from autooptimizer.policies.audit import AuditLog

    try:
        report = AuditLog().verify()
        return {"ok": report.ok, "records": report.records, "problem": report.problem}
    except Exception as exc:  # noqa: BLE001
        return {"ok": False, "problem": f"{type(exc).__name__}: {exc}"}


def journal() -> dict[str, Any]:
    from autooptimizer.loop.journal import Journal
    from autooptimizer.settings import get_settings

    j = Journal(get_settings())
    return {"running": [c.id for c in j.running()], "dirty": [c.id for c in j.dirty()]}


def promoted_evaluations(original: str) -> dict[str, dict[str, Any]]:
    """Per repaired domain: the best held-out NDCG@10 a watched promotion reached and its fixed evaluation set, from
    the forgetting guard's durable record (AUTOOPT_HOME/evalsets: `best.json` + one set per domain, ml/forgetting.py).
    Not from the promoting cycles' artifacts: retention prunes those (`cycleArtifacts`), and in the month soak the two
    promotions' folders were gone by the end, which read as "nothing promoted". The original domain's sets are the
    other invariant's. Raises EvalSetError when the record or a set cannot be read."""
    from autooptimizer.ml import forgetting as fg

    best = fg.read_best().best
    out: dict[str, dict[str, Any]] = {}
    for s in fg.load_sets():
        if s.domain == original or s.key not in best:
            continue
        row = best[s.key]
        out[s.key] = {"best_promoted": row.get("ndcg@10"), "cycle": row.get("cycle_id"),
                      "version": row.get("version"), "data": s.data, "split": s.split, "qids": s.qids}
    return out


def _ndcg(version: str, folder: str | Path, split: str | None = None, qids: set[str] | None = None) -> float:
    from autooptimizer.ml.evaluate import evaluate_spec
    from autooptimizer.search import model_store

    return evaluate_spec(model_store.load(version), folder, split=split, qids=qids).ndcg_at_10


def offline(scenario: Scenario, cycles: list[CycleRow], champion: str | None, gold: str | None) -> dict[str, Any]:
    """The final champion's held-out NDCG@10 per repaired domain, and champion vs gold on the original's test split."""
    from autooptimizer.settings import get_settings

    out: dict[str, Any] = {"domains": {}, "original": {}}
    if not champion:
        out["error"] = "no champion alias"
        return out
    try:
        rows = promoted_evaluations(scenario.original)
    except Exception as exc:  # noqa: BLE001 - an unreadable record is a failed check, never "nothing promoted"
        out["error"] = f"{type(exc).__name__}: {getattr(exc, 'problem', None) or exc}"
        rows = {}
    promotions = [c.id for c in cycles if c.outcome == "promoted"]
    if promotions and not rows and "error" not in out:
        out["error"] = (f"{len(promotions)} promotion(s) ({', '.join(promotions)}) but no best-promoted value in "
                        "AUTOOPT_HOME/evalsets/best.json: the repaired domains cannot be checked")
    for key, row in rows.items():
        try:
            row["final"] = round(_ndcg(champion, get_settings().dataset(row["data"]), row["split"],
                                       set(row.pop("qids"))), 4)
        except Exception as exc:  # noqa: BLE001 - unmeasured stays None (a failed check)
            row.pop("qids", None)
            row["error"] = f"{type(exc).__name__}: {getattr(exc, 'problem', None) or exc}"
        out["domains"][key] = row
    folder = get_settings().dataset(scenario.original)
    for split in ("test", None):
        try:
            out["original"] = {"dataset": scenario.original, "split": split or "all judged",
                               "champion": round(_ndcg(champion, folder, split), 4),
                               "gold": round(_ndcg(gold, folder, split), 4) if gold else None}
            break
        except Exception as exc:  # noqa: BLE001 - no test split: every judged query
            out["original"] = {"error": f"{type(exc).__name__}: {getattr(exc, 'problem', None) or exc}"}
    return out


def final_state(scenario: Scenario, cycles: list[CycleRow], *, evaluate: bool = True) -> dict[str, Any]:
    state = {"consistency": consistency(), "audit": audit(), "journal": journal()}
    if evaluate:
        c = state["consistency"]
        state["offline"] = offline(scenario, cycles, c.get("champion"), c.get("gold"))
    return state
