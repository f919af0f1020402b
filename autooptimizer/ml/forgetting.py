"""Chained repairs without forgetting: fixed evaluation sets and the forgetting guard of the promotion rule.

Each repair trains from the current champion, so after shifts to A then B the champion carries A's repair too. The
guard checks that it still serves A (and the original domain) as well as before:

- **Evaluation sets** (`AUTOOPT_HOME/evalsets/<key>.json`): when a domain is first repaired its held-out query ids
  are fixed (key = the domain's name), and so is the original domain's `test` split (key `<original>:test`). Each
  file holds the ids, the BEIR folder or name they come from, and `hash` = sha256 of (domain, split, sorted ids); a
  file whose hash does not match, or that does not parse, is an error (`EvalSetError`), never an empty set. Later
  repairs of the same domain hold out exactly the same ids. No training step sees them: the dataset builder drops
  their feedback (`excluded`) and `train` refuses a dataset that holds one (`assert_unseen`).
- **Best promoted values** (`AUTOOPT_HOME/evalsets/best.json`): per set, the highest offline NDCG@10 of a promoted
  version (written when a promotion's watch passed), and gold's NDCG@10 on it (gold is immutable; cached per gold
  version and set hash).
- **The guard** (`judge`): for every set, the reference is max(best promoted, gold); the challenger is refused when
  it is below the reference by more than `promotion.forgettingTolerance`, or when any score it needs is unknown (a
  missing or non-finite number, an unreadable file). A set with neither a promoted value nor a gold score (none so
  far) has nothing to lose and is not guarded (the new-domain margin guards it).

The guard's table (one row per set) goes into evaluation.json (`forgetting`) and the cycle's summary.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from autooptimizer.errors import AutoOptError

BEST_FILE = "best.json"


class EvalSetError(AutoOptError):
    """An evaluation set or the best-value record cannot be read: nothing may be trained or promoted on a guess."""


class EvalSet(BaseModel):
    """One fixed evaluation set: the judged query ids of `domain` (a split of it when `split` is set)."""

    key: str = Field(description="the domain's name, or `<domain>:<split>` for the original domain's split")
    domain: str = Field(description="the collection name feedback records carry (`dataset`)")
    data: str = Field(description="the BEIR folder or dataset name evaluate_model reads")
    split: str | None = None
    qids: list[str] = Field(min_length=1)
    hash: str
    created_at: str
    cycle_id: str | None = None


def set_key(domain: str, split: str | None = None) -> str:
    return domain if split is None else f"{domain}:{split}"


def set_hash(domain: str, split: str | None, qids: Iterable[str]) -> str:
    """sha256 over the domain, the split and the sorted ids: what makes two sets the same set."""
    body = json.dumps({"domain": domain, "split": split, "qids": sorted(set(qids))}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()


def evalsets_dir() -> Path:
    from autooptimizer.settings import get_settings

    d = get_settings().home / "evalsets"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _file(key: str) -> Path:
    return evalsets_dir() / f"{key.replace(':', '@')}.json"


def qids_file(s: EvalSet) -> Path:
    """The set's ids, one per line (what evaluate_model's `qids_file` and `--holdout-qids` read)."""
    path = evalsets_dir() / f"{s.key.replace(':', '@')}.qids"
    text = "".join(f"{q}\n" for q in s.qids)
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    return path


def _read(path: Path) -> EvalSet:
    try:
        s = EvalSet.model_validate_json(path.read_text())
    except (OSError, ValidationError, ValueError) as exc:
        raise EvalSetError(f"Evaluation set {path} is unreadable ({type(exc).__name__}).",
                           "Restore it from a backup; until then training and promotion are refused.") from exc
    if set_hash(s.domain, s.split, s.qids) != s.hash or _file(s.key) != path:
        raise EvalSetError(f"Evaluation set {path} does not match its hash (its ids or name were changed).",
                           "Restore it from a backup; evaluation sets are never edited.")
    return s


def load_sets() -> list[EvalSet]:
    """Every fixed set, oldest first. Raises EvalSetError when any file cannot be read or verified."""
    sets = [_read(p) for p in sorted(evalsets_dir().glob("*.json")) if p.name != BEST_FILE]
    return sorted(sets, key=lambda s: (s.created_at, s.key))


def get_set(key: str) -> EvalSet | None:
    path = _file(key)
    return _read(path) if path.exists() else None


def fix_set(domain: str, data: str, qids: Iterable[str], *, split: str | None = None,
            cycle_id: str | None = None) -> EvalSet:
    """The set for (domain, split): the stored one when it exists (never replaced), else these ids, now fixed."""
    key = set_key(domain, split)
    existing = get_set(key)
    if existing is not None:
        return existing
    ids = sorted(set(qids))
    s = EvalSet(key=key, domain=domain, data=data, split=split, qids=ids, hash=set_hash(domain, split, ids),
                created_at=datetime.now(UTC).isoformat(timespec="microseconds"), cycle_id=cycle_id)
    _write_json(_file(key), s.model_dump(mode="json"))
    return s


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True))
    os.replace(tmp, path)


# -- no training step sees them -----------------------------------------------------------------------------------
def excluded() -> set[tuple[str, str]]:
    """(domain, query id) of every fixed set. Raises EvalSetError when a set cannot be read."""
    return {(s.domain, q) for s in load_sets() for q in s.qids}


def assert_unseen(queries: Iterable[tuple[str | None, str | None]], what: str) -> None:
    """Raise EvalSetError when any (dataset, query id) of `queries` belongs to a fixed evaluation set."""
    held = excluded()
    seen = sorted({f"{d}/{q}" for d, q in queries if (str(d), str(q)) in held})
    if seen:
        raise EvalSetError(f"{what} holds {len(seen)} queries of a fixed evaluation set: {seen[:5]}.",
                           "Rebuild the dataset: the builder drops evaluation queries (ml/forgetting.py).")


# -- best promoted values and gold's scores ------------------------------------------------------------------------
class Best(BaseModel):
    best: dict[str, dict[str, Any]] = Field(default_factory=dict)  # key -> {ndcg@10, version, cycle_id, hash}
    gold: dict[str, dict[str, Any]] = Field(default_factory=dict)  # key -> {ndcg@10, version, hash}


def read_best() -> Best:
    """The record of best promoted values (empty before the first promotion). Unreadable -> EvalSetError."""
    path = evalsets_dir() / BEST_FILE
    if not path.exists():
        return Best()
    try:
        return Best.model_validate_json(path.read_text())
    except (OSError, ValidationError, ValueError) as exc:
        raise EvalSetError(f"{path} is unreadable ({type(exc).__name__}).",
                           "Restore it from a backup; until then promotion is refused.") from exc


def gold_score(best: Best, s: EvalSet, gold: str) -> float | None:
    """Gold's cached NDCG@10 on `s` (same gold version and set hash), else None."""
    row = best.gold.get(s.key) or {}
    return _finite(row.get("ndcg@10")) if (row.get("version"), row.get("hash")) == (gold, s.hash) else None


def remember_gold(s: EvalSet, gold: str, ndcg: float) -> None:
    best = read_best()
    best.gold[s.key] = {"ndcg@10": ndcg, "version": gold, "hash": s.hash}
    _write_json(evalsets_dir() / BEST_FILE, best.model_dump(mode="json"))


def record_promotion(table: dict[str, Any], version: str, cycle_id: str | None) -> dict[str, float]:
    """After a watched promotion: raise each set's best to the promoted version's score where it is higher.
    Returns the values raised."""
    best, raised = read_best(), {}
    for row in table.get("rows", []):
        score, key = _finite(row.get("challenger")), row.get("set")
        if score is None or not isinstance(key, str):
            continue
        cur = _finite((best.best.get(key) or {}).get("ndcg@10"))
        if cur is None or score > cur:
            best.best[key] = {"ndcg@10": score, "version": version, "cycle_id": cycle_id, "hash": row.get("hash")}
            raised[key] = score
    _write_json(evalsets_dir() / BEST_FILE, best.model_dump(mode="json"))
    return raised


# -- the guard ------------------------------------------------------------------------------------------------------
class GuardRow(BaseModel):
    set: str
    hash: str | None = None
    queries: int | None = None
    challenger: float | None = None
    champion: float | None = None
    gold: float | None = None
    best: float | None = None
    reference: float | None = None
    drop: float | None = None
    ok: bool = False
    note: str = ""


class GuardResult(BaseModel):
    ok: bool
    tolerance: float
    rows: list[GuardRow]
    reasons: list[str]


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def judge(rows: list[GuardRow], tolerance: float, problems: Iterable[str] = ()) -> GuardResult:
    """Refuse when, on any set, the challenger is more than `tolerance` below max(best promoted, gold), or its score
    is unknown while a reference exists; `problems` (unreadable sets or records) refuse outright."""
    reasons = [f"forgetting guard: {p}: not promotable" for p in problems]
    out: list[GuardRow] = []
    for row in rows:
        r = row.model_copy()
        refs = [v for v in (_finite(r.best), _finite(r.gold)) if v is not None]
        r.reference = max(refs) if refs else None
        chall = _finite(r.challenger)
        if r.reference is None:
            r.ok, r.note = chall is not None, "nothing promoted or measured on it yet" if chall is not None \
                else "challenger score unknown"
        elif chall is None:
            r.ok, r.note = False, "challenger score unknown (missing or not a number)"
        else:
            r.drop = round(r.reference - chall, 6)
            r.ok = r.drop <= tolerance
            r.note = f"drop {r.drop:+.4f} {'<=' if r.ok else '>'} tolerance {tolerance}"
        if not r.ok:
            reasons.append(f"forgetting guard: {r.set}: {r.note}")
        out.append(r)
    ok = not reasons
    if ok:
        reasons.append(f"forgetting guard: {len(out)} evaluation sets within {tolerance} of their best")
    return GuardResult(ok=ok, tolerance=tolerance, rows=out, reasons=reasons)
