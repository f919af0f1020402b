"""Training datasets built from the feedback log: immutable, addressed by the hash of their content.

Pairs: positives are documents judged relevant; hard negatives are documents the service itself served in its top-k
that were not judged relevant; judged non-relevant documents are kept as negatives too. Pairs are deduplicated per
(query, document), keeping the highest grade. Optional augmented queries (from augment.py) ride along, each naming
its source query.

Layout: AUTOOPT_HOME/datasets/<hash>/{pairs.jsonl, queries.jsonl, dataset_manifest.yaml}. A build whose content
already exists returns the stored version; files are written once (atomic rename) and made read-only.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError

from autooptimizer.errors import InputError, NotFoundError

FORMAT = "autoopt-pairs-v1"
MANIFEST = "dataset_manifest.yaml"


class Pair(BaseModel):
    query_key: str
    doc_id: str
    label: int
    kind: Literal["positive", "hard_negative", "judged_negative"]


class QueryRow(BaseModel):
    query_key: str
    text: str
    dataset: str | None = None
    query_id: str | None = None
    served_ndcg10: float | None = None
    model_version: str | None = None
    augmented_from: str | None = None
    method: str | None = None


class Source(BaseModel):
    path: str
    sha256: str
    records: int


class Counts(BaseModel):
    queries: int
    pairs: int
    positives: int
    hard_negatives: int
    judged_negatives: int
    augmented_queries: int = 0


class DatasetManifest(BaseModel):
    hash: str
    format: str = FORMAT
    created_at: str
    counts: Counts
    sources: list[Source]
    parent_version: str | None = Field(default=None,
                                       description="the model version whose traffic produced the feedback")
    parent_dataset: str | None = Field(default=None,
                                       description="dataset hash this one extends (e.g. with augmentation)")
    augmentation: dict[str, Any] | None = Field(default=None,
                                                description="the recipe: methods, size, seed, source csv hash")
    hard_negatives_k: int
    domains: list[str]
    eval_records_dropped: int = Field(default=0, description="feedback records of fixed evaluation-set queries "
                                      "left out (ml/forgetting.py): no training step sees them")


class Dataset(BaseModel):
    manifest: DatasetManifest
    path: Path
    queries: list[QueryRow]
    pairs: list[Pair]

    def qrels(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for p in self.pairs:
            out.setdefault(p.query_key, {})[p.doc_id] = p.label
        return out

    def original_queries(self) -> dict[str, str]:
        return {q.query_key: q.text for q in self.queries if q.augmented_from is None}

    def augmented_queries(self) -> list[tuple[str, str]]:
        return [(q.augmented_from, q.text) for q in self.queries if q.augmented_from is not None]


def datasets_root() -> Path:
    from autooptimizer.settings import get_settings

    d = get_settings().home / "datasets"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _canonical(rows: Sequence[BaseModel]) -> list[str]:
    return [json.dumps(r.model_dump(mode="json"), sort_keys=True) for r in rows]


def content_hash(queries: list[QueryRow], pairs: list[Pair], parent_version: str | None,
                 augmentation: dict | None, hard_negatives_k: int) -> str:
    """Hash of what defines the dataset (rows, parent, recipe) — not of when or from which path it was built."""
    h = hashlib.sha256()
    h.update(FORMAT.encode())
    h.update(json.dumps({"parent": parent_version, "aug": augmentation, "k": hard_negatives_k},
                        sort_keys=True).encode())
    for line in sorted(_canonical(queries)) + ["--"] + sorted(_canonical(pairs)):
        h.update(line.encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


def pairs_from_feedback(records, hard_negatives_k: int = 10) -> tuple[list[QueryRow], list[Pair]]:
    """Deduplicated query rows and pairs from feedback records (latest record wins the query's served NDCG)."""
    queries: dict[str, QueryRow] = {}
    best: dict[tuple[str, str], Pair] = {}
    rank = {"positive": 2, "judged_negative": 1, "hard_negative": 0}

    def put(p: Pair) -> None:
        key = (p.query_key, p.doc_id)
        cur = best.get(key)
        if cur is None or (p.label, rank[p.kind]) > (cur.label, rank[cur.kind]):
            best[key] = p

    for r in records:
        key = r.key
        queries[key] = QueryRow(query_key=key, text=r.query, dataset=r.dataset, query_id=r.query_id,
                                served_ndcg10=r.ndcg10, model_version=r.model_version)
        for doc, grade in r.judgments.items():
            put(Pair(query_key=key, doc_id=doc, label=max(int(grade), 0),
                     kind="positive" if grade > 0 else "judged_negative"))
        for s in r.served[:hard_negatives_k]:
            if r.judgments.get(s.doc_id, 0) <= 0:
                put(Pair(query_key=key, doc_id=s.doc_id, label=0, kind="hard_negative"))
    pairs = sorted(best.values(), key=lambda p: (p.query_key, p.doc_id))
    return sorted(queries.values(), key=lambda q: q.query_key), pairs


def read_augmented_csv(path: Path, known: dict[str, QueryRow]) -> list[QueryRow]:
    rows: list[QueryRow] = []
    with path.open(encoding="utf-8", newline="") as fh:
        for n, row in enumerate(csv.DictReader(fh), 2):
            src = row.get("query_key")
            text = (row.get("augmented") or "").strip()
            if not src or src not in known or not text:
                raise InputError(f"{path} line {n}: unknown source query {src!r} or empty text.",
                                 "Augment the same dataset you extend (autoopt augment --dataset HASH).")
            rows.append(QueryRow(query_key=f"{src}#aug{row['row']}", text=text, dataset=known[src].dataset,
                                 augmented_from=src, method=row.get("method")))
    return rows


def build_dataset(
    feedback: str | Path,
    parent_version: str | None = None,
    hard_negatives_k: int = 10,
    augmented_csv: str | Path | None = None,
    parent_dataset: str | None = None,
    augmentation: dict[str, Any] | None = None,
) -> DatasetManifest:
    """Build (or find) the dataset for a feedback log. With `augmented_csv` (from augment.py on `parent_dataset`)
    the augmented queries are added, each inheriting its source query's judgments."""
    from autooptimizer.ml.feedback import read_feedback
    from autooptimizer.ml.forgetting import excluded

    fb_path = Path(feedback)
    records = read_feedback(fb_path)
    held = excluded()  # fixed evaluation sets; an unreadable one raises: nothing is built on a guess
    kept = [r for r in records if (str(r.dataset), str(r.query_id)) not in held]
    dropped, records = len(records) - len(kept), kept
    queries, pairs = pairs_from_feedback(records, hard_negatives_k)
    if not any(p.kind == "positive" for p in pairs):
        raise InputError(f"Feedback log {fb_path} has no positive judgment.",
                         "A dataset needs at least one document judged relevant.")
    if parent_version is None:
        versions = sorted({r.model_version for r in records})
        parent_version = versions[0] if len(versions) == 1 else None
    sources = [Source(path=str(fb_path.resolve()), sha256=_sha256_file(fb_path), records=len(records))]
    if augmented_csv is not None:
        aug_path = Path(augmented_csv)
        if not aug_path.is_file():
            raise NotFoundError(f"Augmented dataset {aug_path} does not exist.", "Run `autoopt augment` first.")
        aug_rows = read_augmented_csv(aug_path, {q.query_key: q for q in queries})
        queries = sorted(queries + aug_rows, key=lambda q: q.query_key)
        sources.append(Source(path=str(aug_path.resolve()), sha256=_sha256_file(aug_path), records=len(aug_rows)))
        augmentation = {**(augmentation or {}), "csv_sha256": sources[-1].sha256}
    digest = content_hash(queries, pairs, parent_version, augmentation, hard_negatives_k)
    manifest = DatasetManifest(
        hash=digest, created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        counts=Counts(queries=sum(q.augmented_from is None for q in queries), pairs=len(pairs),
                      positives=sum(p.kind == "positive" for p in pairs),
                      hard_negatives=sum(p.kind == "hard_negative" for p in pairs),
                      judged_negatives=sum(p.kind == "judged_negative" for p in pairs),
                      augmented_queries=sum(q.augmented_from is not None for q in queries)),
        sources=sources, parent_version=parent_version, parent_dataset=parent_dataset, augmentation=augmentation,
        hard_negatives_k=hard_negatives_k, domains=sorted({q.dataset for q in queries if q.dataset}),
        eval_records_dropped=dropped,
    )
    target = datasets_root() / digest
    if (target / MANIFEST).is_file():
        return load_dataset(digest).manifest  # immutable: same content, same stored version
    tmp = Path(tempfile.mkdtemp(prefix=f".{digest}-", dir=datasets_root()))
    try:
        (tmp / "queries.jsonl").write_text("".join(line + "\n" for line in _canonical(queries)))
        (tmp / "pairs.jsonl").write_text("".join(line + "\n" for line in _canonical(pairs)))
        (tmp / MANIFEST).write_text(yaml.safe_dump(manifest.model_dump(mode="json"), sort_keys=False))
        for f in tmp.iterdir():
            f.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / MANIFEST).is_file():
                raise
    finally:
        if tmp.exists():
            for f in tmp.iterdir():
                f.chmod(stat.S_IWUSR | stat.S_IRUSR)
            shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def resolve_dataset_path(ref: str | Path) -> Path:
    p = Path(ref).expanduser()
    if p.is_file() and p.name == MANIFEST:
        return p.parent
    if p.is_dir():
        return p
    cand = datasets_root() / str(ref)
    if cand.is_dir():
        return cand
    matches = [d for d in datasets_root().iterdir() if d.is_dir() and d.name.startswith(str(ref))] \
        if len(str(ref)) >= 6 else []
    if len(matches) == 1:
        return matches[0]
    raise NotFoundError(f"Dataset {ref} not found under {datasets_root()}.",
                        "Pass a dataset hash printed by `autoopt data build`, or its folder.")


def load_dataset(ref: str | Path) -> Dataset:
    """Load and verify a dataset: the manifest must parse and the rows must hash to the manifest's hash."""
    path = resolve_dataset_path(ref)
    try:
        manifest = DatasetManifest.model_validate(yaml.safe_load((path / MANIFEST).read_text()))
        queries = [QueryRow.model_validate_json(line) for line in (path / "queries.jsonl").read_text().splitlines()
                   if line.strip()]
        pairs = [Pair.model_validate_json(line) for line in (path / "pairs.jsonl").read_text().splitlines()
                 if line.strip()]
    except FileNotFoundError as exc:
        raise InputError(f"Dataset {path} is incomplete ({Path(exc.filename).name} missing).",
                         "Rebuild it with `autoopt data build`; stored datasets are never edited.") from exc
    except (yaml.YAMLError, ValidationError, ValueError, TypeError) as exc:
        raise InputError(f"Dataset {path} is corrupt: {str(exc).splitlines()[0]}",
                         "Rebuild it with `autoopt data build`; stored datasets are never edited.") from exc
    if not pairs or not any(p.kind == "positive" for p in pairs):
        raise InputError(f"Dataset {path} has no positive pair.", "Rebuild it from feedback with judgments.")
    actual = content_hash(queries, pairs, manifest.parent_version, manifest.augmentation, manifest.hard_negatives_k)
    if actual != manifest.hash or path.name != manifest.hash:
        raise InputError(f"Dataset {path} does not match its manifest hash ({actual} != {manifest.hash}).",
                         "The files were modified; rebuild the dataset instead of editing it.")
    return Dataset(manifest=manifest, path=path, queries=queries, pairs=pairs)
