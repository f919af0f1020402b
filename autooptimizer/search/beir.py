"""Load BEIR-format datasets and union them into one served collection.

A BEIR folder holds `corpus.jsonl` (`_id`, `title`, `text`), `queries.jsonl` (`_id`, `text`, optional `split`)
and qrels as `qrels.tsv` or `qrels/<split>.tsv` (header `query-id corpus-id score`).
The live service serves a union of datasets, so a traffic shift to another dataset's queries hits the same index:
in a `Collection` every doc id is `"<dataset>/<docid>"`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from autooptimizer.errors import InputError, NotFoundError


class Doc(BaseModel):
    model_config = ConfigDict(frozen=True)

    title: str = ""
    text: str = ""

    @property
    def full_text(self) -> str:
        """What the retrievers index: title and body."""
        return f"{self.title}. {self.text}" if self.title else self.text


class BeirDataset(BaseModel):
    """One dataset; ids are the dataset's own (unprefixed)."""

    name: str
    corpus: dict[str, Doc]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    split: str | None = None

    def judged_queries(self) -> dict[str, str]:
        """Queries that have at least one judgment with a positive grade."""
        return {q: t for q, t in self.queries.items() if any(g > 0 for g in self.qrels.get(q, {}).values())}


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(
                    f"{path} line {lineno} is not valid JSON ({exc.msg}).",
                    "Fix or remove that line; each line must be one JSON object.",
                ) from exc
            if not isinstance(row, dict) or "_id" not in row:
                raise InputError(f"{path} line {lineno} has no `_id` field.", "Each line needs `_id` and `text`.")
            yield lineno, row


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            parts = line.rstrip("\n").split("\t")
            if lineno == 1 and parts[0].strip().lower() in ("query-id", "query_id", "qid"):
                continue
            if not line.strip():
                continue
            if len(parts) < 3:
                parts = line.split()
            if len(parts) < 3:
                raise InputError(
                    f"{path} line {lineno} has {len(parts)} fields, expected 3.",
                    "Each qrels line is `query-id<TAB>corpus-id<TAB>score`.",
                )
            try:
                grade = int(float(parts[2]))
            except ValueError as exc:
                raise InputError(
                    f"{path} line {lineno}: score {parts[2]!r} is not a number.", "Use integer grades."
                ) from exc
            qrels.setdefault(parts[0].strip(), {})[parts[1].strip()] = grade
    return qrels


def _qrels_files(root: Path, split: str | None) -> list[Path]:
    single = root / "qrels.tsv"
    folder = root / "qrels"
    if split is not None:
        if (folder / f"{split}.tsv").is_file():
            return [folder / f"{split}.tsv"]
        if single.is_file():
            return [single]  # classic collections have one judged set; it serves every split
        raise NotFoundError(
            f"{root} has no qrels for split {split!r} (looked for {folder / f'{split}.tsv'} and {single}).",
            f"Use a split that exists ({', '.join(p.stem for p in folder.glob('*.tsv')) or 'none'}) or no split.",
        )
    if single.is_file():
        return [single]
    files = sorted(folder.glob("*.tsv")) if folder.is_dir() else []
    if not files:
        raise NotFoundError(f"{root} has no qrels.tsv or qrels/<split>.tsv.", "Add the qrels file (BEIR layout).")
    return files


def load_beir(path: str | Path, split: str | None = None, name: str | None = None) -> BeirDataset:
    """Load a BEIR folder. With `split`, queries are those of that split (by their `split` field when present)
    and qrels come from `qrels/<split>.tsv` (or the single `qrels.tsv`). Without it: every query and all qrels."""
    root = Path(path)
    if not root.is_dir():
        raise NotFoundError(f"Dataset folder {root} does not exist.", "Pass a BEIR folder or set AUTOOPT_DATA_DIR.")
    for required in ("corpus.jsonl", "queries.jsonl"):
        if not (root / required).is_file():
            raise NotFoundError(f"{root / required} is missing.", "A BEIR folder needs corpus.jsonl and queries.jsonl.")
    corpus: dict[str, Doc] = {}
    for lineno, row in _read_jsonl(root / "corpus.jsonl"):
        if not isinstance(row.get("text", ""), str) or not isinstance(row.get("title", ""), str):
            raise InputError(f"{root / 'corpus.jsonl'} line {lineno}: `title`/`text` must be strings.", "Fix the line.")
        corpus[str(row["_id"])] = Doc(title=row.get("title") or "", text=row.get("text") or "")
    if not corpus:
        raise InputError(f"{root / 'corpus.jsonl'} is empty.", "The corpus needs at least one document.")
    queries: dict[str, str] = {}
    for lineno, row in _read_jsonl(root / "queries.jsonl"):
        if not isinstance(row.get("text"), str):
            raise InputError(
                f"{root / 'queries.jsonl'} line {lineno}: `text` missing or not a string.", "Fix the line."
            )
        if split is not None and "split" in row and row["split"] != split:
            continue
        queries[str(row["_id"])] = row["text"]
    qrels: dict[str, dict[str, int]] = {}
    for f in _qrels_files(root, split):
        for qid, judged in _read_qrels(f).items():
            qrels.setdefault(qid, {}).update(judged)
    if split is not None:
        qrels = {q: j for q, j in qrels.items() if q in queries}
        queries = {q: t for q, t in queries.items() if q in qrels or not _has_split_field(root)}
    if not queries:
        raise InputError(f"{root / 'queries.jsonl'} has no queries{f' for split {split!r}' if split else ''}.",
                         "Check the file and the split name.")
    return BeirDataset(name=name or root.name, corpus=corpus, queries=queries, qrels=qrels, split=split)


def _has_split_field(root: Path) -> bool:
    with (root / "queries.jsonl").open(encoding="utf-8") as fh:
        first = fh.readline()
    try:
        return "split" in json.loads(first)
    except json.JSONDecodeError:
        return False


def prefixed(dataset: str, doc_id: str) -> str:
    return f"{dataset}/{doc_id}"


class Collection:
    """The served corpus: a union of datasets with ids `"<dataset>/<docid>"`, in a stable order."""

    def __init__(self, datasets: list[BeirDataset]) -> None:
        if not datasets:
            raise InputError("A collection needs at least one dataset.", "Pass one or more BEIR datasets.")
        names = [d.name for d in datasets]
        if len(set(names)) != len(names):
            raise InputError(f"Duplicate dataset names in collection: {names}.", "Give each dataset a unique name.")
        self.datasets: dict[str, BeirDataset] = {d.name: d for d in datasets}
        self.doc_ids: list[str] = [prefixed(d.name, i) for d in datasets for i in d.corpus]
        self.docs: dict[str, Doc] = {prefixed(d.name, i): doc for d in datasets for i, doc in d.corpus.items()}
        self.index_of: dict[str, int] = {doc_id: n for n, doc_id in enumerate(self.doc_ids)}
        self._hash: str | None = None

    @property
    def name(self) -> str:
        return "+".join(self.datasets)

    def __len__(self) -> int:
        return len(self.doc_ids)

    def text(self, doc_id: str) -> str:
        return self.docs[doc_id].full_text

    def content_hash(self) -> str:
        """Identity of the indexed content (ids and texts), used to key caches."""
        if self._hash is None:
            h = hashlib.sha256()
            for doc_id in self.doc_ids:
                h.update(doc_id.encode())
                h.update(b"\0")
                h.update(self.text(doc_id).encode())
                h.update(b"\1")
            self._hash = h.hexdigest()[:20]
        return self._hash

    def qrels(self, dataset: str) -> dict[str, dict[str, int]]:
        """A dataset's qrels with doc ids prefixed as served."""
        ds = self.datasets[dataset]
        return {q: {prefixed(dataset, d): g for d, g in j.items()} for q, j in ds.qrels.items()}


def load_collection(names_or_paths: list[str], split: str | None = None) -> Collection:
    """Resolve datasets by name under AUTOOPT_DATA_DIR (or path) and union them."""
    from autooptimizer.settings import get_settings

    settings = get_settings()
    return Collection([load_beir(settings.dataset(n), split=split) for n in names_or_paths])
