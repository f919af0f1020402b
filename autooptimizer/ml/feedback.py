"""The service's feedback log (JSONL, one record per POST /feedback) and a simulator of it for offline repairs.

A record: {"ts", "query_id", "dataset", "query", "model_version", "request_id", "served": [{"doc_id", "score"}],
"judgments": {doc_id: grade}, "ndcg10"}. Doc ids are collection ids "<dataset>/<docid>".
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError, model_validator

from autooptimizer.errors import InputError, NotFoundError


class ServedDoc(BaseModel):
    doc_id: str
    score: float | None = None


def split_query_id(dataset: str | None, query_id: str | None) -> tuple[str | None, str | None]:
    """The live log's form in the builder's terms: the simulator sends query_id "<dataset>/<id>" and no dataset;
    datasets key queries by (dataset, id) and take their domains from `dataset`."""
    if not dataset and isinstance(query_id, str) and "/" in query_id:
        dataset, query_id = query_id.split("/", 1)
    return dataset, query_id


class FeedbackRecord(BaseModel):
    query: str = Field(min_length=1)
    model_version: str
    judgments: dict[str, int]
    served: list[ServedDoc] = Field(default_factory=list)
    query_id: str | None = None
    dataset: str | None = None
    ndcg10: float | None = None
    ts: float | None = None
    request_id: str | None = None

    @model_validator(mode="after")
    def _dataset_from_query_id(self) -> FeedbackRecord:
        self.dataset, self.query_id = split_query_id(self.dataset, self.query_id)
        return self

    @property
    def key(self) -> str:
        """Stable query key: `<dataset>/<query_id>` when the simulator sent ids, else the normalised text."""
        if self.query_id:
            return f"{self.dataset or 'q'}/{self.query_id}"
        return "text:" + " ".join(self.query.lower().split())


def read_feedback(path: str | Path) -> list[FeedbackRecord]:
    """Parse a feedback log; a corrupt line is an error naming the line (a dataset must not silently shrink)."""
    p = Path(path)
    if not p.is_file():
        raise NotFoundError(f"Feedback log {p} does not exist.",
                            "Point at the service's AUTOOPT_HOME/feedback/feedback.jsonl or a simulated log.")
    out: list[FeedbackRecord] = []
    with p.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                out.append(FeedbackRecord.model_validate(json.loads(line)))
            except (json.JSONDecodeError, ValidationError) as exc:
                raise InputError(f"{p} line {n} is not a valid feedback record: {str(exc).splitlines()[0]}",
                                 "Fix or remove that line; each line is one JSON object from POST /feedback.") from exc
    if not out:
        raise InputError(f"Feedback log {p} has no records.", "Send traffic with feedback first (autoopt simulate).")
    return out


def split_judged(qids: list[str], seed: int) -> tuple[list[str], list[str]]:
    """Seeded half/half split of judged query ids: (simulated feedback, held out)."""
    q = sorted(qids)
    random.Random(seed).shuffle(q)
    half = len(q) // 2
    return sorted(q[:half]), sorted(q[half:])


def read_qids(path: str | Path) -> list[str]:
    """Query ids from a file: a JSON list, or one id per line (blank lines and #comments ignored)."""
    p = Path(path)
    if not p.is_file():
        raise NotFoundError(f"Query id file {p} does not exist.", "Pass a file with one query id per line.")
    text = p.read_text(encoding="utf-8").strip()
    if text.startswith("["):
        try:
            return [str(x) for x in json.loads(text)]
        except json.JSONDecodeError as exc:
            raise InputError(f"{p} is not a valid JSON list.", "Write a JSON list or one id per line.") from exc
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]


def simulate_feedback(spec, collection, queries: dict[str, str], qrels: dict[str, dict[str, int]], out: Path,
                      dataset: str, k: int = 20) -> Path:
    """Serve `queries` with `spec` as the service would and write one feedback record per query (judgments from
    qrels): the same log format POST /feedback writes, so the dataset builder cannot tell them apart."""
    from autooptimizer.search.metrics_eval import ndcg10_ranking
    from autooptimizer.search.pipeline import SearchPipeline

    pipe = SearchPipeline(spec, collection).warm(progress=False)
    run = pipe.run(queries, k=k)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as fh:
        for qid in sorted(queries):
            ranked = sorted(run.get(qid, {}).items(), key=lambda kv: -kv[1])
            served = [d for d, _ in ranked]
            rec = FeedbackRecord(
                ts=time.time(), query_id=qid, dataset=dataset, query=queries[qid], model_version=spec.version,
                served=[ServedDoc(doc_id=d, score=round(s, 6)) for d, s in ranked], judgments=qrels.get(qid, {}),
                ndcg10=ndcg10_ranking(served, qrels.get(qid, {})),
            )
            fh.write(rec.model_dump_json() + "\n")
    return out
