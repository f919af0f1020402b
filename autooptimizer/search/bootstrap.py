"""Build the first champion: BM25 + MiniLM bi-encoder, z-score fused, fusion weight chosen on SciFact `train` only.

SciFact `test` is touched once, after the weight is fixed, to report the champion's NDCG@10 (and, for reference,
BM25 alone and MiniLM alone over the same candidates). The version id is a hash of the inputs, so a rerun with the
same seed and data finds the stored version and does nothing.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, Field

from autooptimizer.search import aliases, model_store
from autooptimizer.search.beir import BeirDataset, Collection, load_beir
from autooptimizer.search.encoder import BOOTSTRAP_MAX_SEQ_LENGTH, encoder_identity
from autooptimizer.search.metrics_eval import ndcg_at_10
from autooptimizer.search.model_store import ModelSpec
from autooptimizer.search.pipeline import SearchPipeline, runs_for_weights

WEIGHT_GRID = [round(0.1 * i, 1) for i in range(11)]
RERANK_DEPTH = 50
RECIPE = "bootstrap-v1"
RESULT_FILE = "bootstrap.json"


class BootstrapResult(BaseModel):
    version: str
    created: bool
    seed: int
    dataset: str
    fusion_weight: float
    rerank_depth: int
    max_seq_length: int
    train_ndcg10_by_weight: dict[str, float]
    test_ndcg10: float
    test_bm25_ndcg10: float
    test_minilm_ndcg10: float
    n_train_queries: int
    n_test_queries: int
    wall_seconds: float
    aliases: dict[str, str] = {}


def _dir_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix in {".jsonl", ".tsv"}:
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def bootstrap(
    seed: int = 0,
    progress: bool = True,
    dataset: str = "scifact",
    max_seq_length: int = BOOTSTRAP_MAX_SEQ_LENGTH,
    log: Callable[[str], None] | None = None,
    warm: list[str] | None = None,
) -> BootstrapResult:
    """Create (or find) the first champion and point the `champion` and `gold` aliases at it if they are unset.

    `warm` names more datasets (e.g. ["cran"]) whose documents are embedded now, so a service over the union starts
    without encoding them."""
    import torch

    from autooptimizer.settings import get_settings

    say = log or (lambda _msg: None)
    t0 = time.perf_counter()
    root = get_settings().dataset(dataset)
    name = root.name
    version = model_store.content_version("v1", {
        "recipe": RECIPE, "seed": seed, "data": _dir_digest(root), "grid": WEIGHT_GRID, "depth": RERANK_DEPTH,
        "encoder": encoder_identity(None, max_seq_length),
    })
    if model_store.exists(version):
        stored = model_store.read_extra(version, RESULT_FILE)
        if stored is not None:
            say(f"model {version} already exists; nothing to do")
            result = BootstrapResult.model_validate({**stored, "created": False})
            _warm(root, warm or [], max_seq_length, progress, say)
            return result.model_copy(update={"aliases": _set_aliases(version)})

    torch.manual_seed(seed)
    say(f"loading {root}")
    collection = Collection([load_beir(root, name=name)])
    train = load_beir(root, split="train", name=name)
    test = load_beir(root, split="test", name=name)
    probe = ModelSpec(version=version, kind="bi_encoder", fusion_weight=0.5, rerank_depth=RERANK_DEPTH,
                      params={"max_seq_length": max_seq_length})
    pipe = SearchPipeline(probe, collection)
    say(f"embedding {len(collection)} documents (cached per encoder under AUTOOPT_HOME/embeddings)")
    pipe.warm(progress=progress)

    say(f"grid search of the fusion weight on {len(train.queries)} {name} train queries")
    fit = fit_fusion_weight(pipe, train, test, name)
    say(f"fusion weight {fit.weight} (train); {name} test NDCG@10 {fit.test_ndcg10:.4f}, read once")
    result = BootstrapResult(
        version=version, created=True, seed=seed, dataset=name, fusion_weight=fit.weight, rerank_depth=RERANK_DEPTH,
        max_seq_length=max_seq_length, train_ndcg10_by_weight=fit.train_ndcg10_by_weight,
        test_ndcg10=fit.test_ndcg10, test_bm25_ndcg10=fit.test_bm25_ndcg10, test_minilm_ndcg10=fit.test_minilm_ndcg10,
        n_train_queries=len(train.queries), n_test_queries=len(test.queries),
        wall_seconds=round(time.perf_counter() - t0, 1),
    )
    spec = ModelSpec(
        version=version, kind="bi_encoder", encoder_path=None, fusion_weight=fit.weight, rerank_depth=RERANK_DEPTH,
        params={"max_seq_length": max_seq_length}, parent=None,
        notes=f"bootstrap seed={seed}: BM25 + base MiniLM, fusion weight chosen on {name} train NDCG@10",
    )
    model_store.save(spec, extra={RESULT_FILE: result.model_dump(exclude={"created", "aliases"})})
    _warm(root, warm or [], max_seq_length, progress, say)
    return result.model_copy(update={"aliases": _set_aliases(version)})


class FusionFit(BaseModel):
    """The fusion weight chosen on train, and test NDCG@10 read once with it (and with BM25 / MiniLM alone)."""

    weight: float
    train_ndcg10_by_weight: dict[str, float]
    test_ndcg10: float
    test_bm25_ndcg10: float
    test_minilm_ndcg10: float
    seconds: float = Field(description="query encoding + grid, after the corpus was embedded")


def fit_fusion_weight(pipe: SearchPipeline, train: BeirDataset, test: BeirDataset, name: str) -> FusionFit:
    """Grid search of the weight on `train` NDCG@10 (ties: the weight nearest 0.5), then `test` once with it.

    `pipe` must be warm (corpus embedded). Doc ids in the qrels are prefixed with `name` as in the collection."""
    t0 = time.perf_counter()
    train_runs = runs_for_weights(pipe.rerank_many(train.queries), WEIGHT_GRID, k=10)
    train_qrels = {q: {f"{name}/{d}": g for d, g in j.items()} for q, j in train.qrels.items()}
    by_weight = {w: ndcg_at_10(run, train_qrels) for w, run in train_runs.items()}
    best = max(WEIGHT_GRID, key=lambda w: (round(by_weight[w], 6), -abs(w - 0.5)))
    test_runs = runs_for_weights(pipe.rerank_many(test.queries), sorted({0.0, 1.0, best}), k=10)
    test_qrels = {q: {f"{name}/{d}": g for d, g in j.items()} for q, j in test.qrels.items()}
    return FusionFit(
        weight=best, train_ndcg10_by_weight={f"{w:.1f}": round(v, 4) for w, v in by_weight.items()},
        test_ndcg10=round(ndcg_at_10(test_runs[best], test_qrels), 4),
        test_bm25_ndcg10=round(ndcg_at_10(test_runs[0.0], test_qrels), 4),
        test_minilm_ndcg10=round(ndcg_at_10(test_runs[1.0], test_qrels), 4),
        seconds=round(time.perf_counter() - t0, 2),
    )


def _set_aliases(version: str) -> dict[str, str]:
    for alias in (aliases.CHAMPION, aliases.GOLD):
        aliases.set_alias(alias, version, only_if_missing=True)
    return aliases.all_aliases()


def _warm(root: Path, names: list[str], max_seq_length: int, progress: bool, say: Callable[[str], None]) -> None:
    from autooptimizer.search.embeddings import doc_embeddings
    from autooptimizer.search.encoder import get_encoder
    from autooptimizer.settings import get_settings

    for name in names:
        path = get_settings().dataset(name)
        if path.resolve() == root.resolve():
            continue
        say(f"embedding {name} documents for serving")
        doc_embeddings(Collection([load_beir(path)]), get_encoder(None, max_seq_length), progress=progress)
