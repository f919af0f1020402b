"""Train a challenger from a dataset, log it to MLflow, store it as an immutable model version.

Trainers (same pipeline: dataset -> fit -> dev check -> store -> register -> alias `challenger`):

- `ltr` (default for repairs): a new `ltr_fusion` expert for the dataset's domain (see ml/ltr.py), gated so the
  original domain is served by the parent unchanged. Fits in well under a minute on this CPU.
- `bi_encoder`: fine-tunes MiniLM with MultipleNegativesRankingLoss (in-batch negatives plus one served hard negative
  per pair), mixed with a replay sample of the original domain's training pairs; the fusion weight is then re-tuned
  on a dev slice. The corpus must be re-embedded for the new encoder.
- `cross_encoder`: a MiniLM cross-encoder head trained with a listwise softmax loss over (positive, hard negatives).

Neural trainers pick the device automatically (CUDA with bf16/fp16 autocast when present, else CPU with
AUTOOPT_THREADS threads), are seeded, show a progress bar, checkpoint the best dev state, stop early on the dev slice
and obey a hard step and wall-time budget. A NaN/inf loss stops training with a clear error; nothing is stored or
registered and aliases are untouched.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from autooptimizer.errors import InputError
from autooptimizer.ml.adapt import DEFAULT, Adaptation

if TYPE_CHECKING:
    import torch

    from autooptimizer.search.beir import Collection

Trainer = Literal["ltr", "bi_encoder", "cross_encoder"]
Progress = Callable[[str, float], None]
# (step, loss tensor) -> the loss to use: observes every neural training step, or injects a fault in a test
LossHook = Callable[[int, Any], Any]


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt option (`adaptaton`) must not train with the defaults

    trainer: Trainer = "ltr"
    seed: int = 0
    max_steps: int = Field(default=200, ge=1)
    time_budget_s: float = Field(default=900.0, gt=0)
    batch_size: int = Field(default=16, ge=2)
    lr: float = Field(default=3e-5, gt=0)
    eval_every: int = Field(default=25, ge=1)
    patience: int = Field(default=3, ge=1)
    dev_fraction: float = Field(default=0.2, gt=0, lt=1)
    replay_pairs: int = Field(default=200, ge=0,
                              description="original-domain training pairs mixed in (neural trainers)")
    original: str = Field(default="scifact",
                          description="original-domain dataset (replay pairs, gate reference queries)")
    hard_negatives: int = Field(default=3, ge=1)
    max_seq_length: int = 256
    depth: int = Field(default=100, ge=10, description="rerank depth of an ltr_fusion challenger")
    bags: int = Field(default=10, ge=0, description="ltr: bootstrap bags for the feature weights (0 or 1 = one fit)")
    adaptation: Adaptation = Field(default_factory=lambda: DEFAULT.model_copy(),
                                   description="unsupervised domain adaptation (ml/adapt.py DEFAULT); the neural "
                                   "trainers take its ict/crop pseudo-queries only")

    @model_validator(mode="after")
    def _neural_adaptation(self) -> TrainConfig:
        """A switch the trainer cannot honour must not train silently without it."""
        if self.trainer != "ltr":
            ad = self.adaptation
            switches = ("bm25_tune", "rm3_idf", "unjudged", "prior", "dense_candidates")
            ltr_only = sorted(k for k in switches if getattr(ad, k))
            if ltr_only:
                raise ValueError(f"adaptation {ltr_only} applies to the ltr trainer only, not {self.trainer}; "
                                 "drop it or use trainer='ltr'")
            if ad.pseudo_queries and ad.pseudo_kind == "terms":
                raise ValueError(f"pseudo_kind 'terms' needs the ltr trainer's BM25 index; use 'ict' or 'crop' with "
                                 f"{self.trainer}")
        return self


class TrainResult(BaseModel):
    version: str
    parent: str
    trainer: Trainer
    run_id: str | None
    device: str
    steps: int = 0
    samples_per_s: float | None = None
    metrics: dict[str, float]
    report: dict
    wall_seconds: float
    aliases: dict[str, str] = {}


def pick_device() -> tuple[str, torch.dtype | None]:
    """('cuda', autocast dtype) when a GPU is present, else ('cpu', None) with the configured thread count."""
    import torch

    from autooptimizer.infra.accelerator import torch_device
    from autooptimizer.settings import get_settings

    if torch_device() == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return "cuda", dtype
    torch.set_num_threads(get_settings().threads)
    return "cpu", None


def torch_module(obj: object) -> torch.nn.Module:
    """The torch module a sentence-transformers model wraps (`model[0].auto_model`, `CrossEncoder.model`): their
    annotations say `Tensor | Module` or Optional; anything but a module is a TypeError here, not later."""
    import torch

    if not isinstance(obj, torch.nn.Module):
        raise TypeError(f"Expected a torch module inside the sentence-transformers model, got {type(obj).__name__}.")
    return obj


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


# -------------------------------------------------------------------------------------------------------------------
# shared helpers
def domain_collection(dataset):
    """The collection of the dataset's domains (AUTOOPT_DATA_DIR names), ids as the service serves them."""
    from autooptimizer.search.beir import load_collection

    if not dataset.manifest.domains:
        raise InputError("The dataset records no domain, so its documents cannot be found.",
                         "Pass the collection explicitly (repair does) or build from feedback with `dataset`.")
    return load_collection(dataset.manifest.domains)


def reference_queries(parent, original: str = "scifact") -> np.ndarray:
    """Original-domain query embeddings for the gate: the parent's, or the root model's training queries (encoded
    at the parent's truncation)."""
    from autooptimizer.search import model_store
    from autooptimizer.search.beir import load_beir
    from autooptimizer.search.encoder import base_max_seq_length, get_encoder
    from autooptimizer.settings import get_settings

    if parent.kind == "ltr_fusion":
        with np.load(Path(parent.resolved_encoder_path()) / parent.params.get("reference_file", "reference.npz")) as z:
            return z["q"]
    root, info = parent, None
    while root is not None:
        info = model_store.read_extra(root.version, "bootstrap.json")
        if info or not root.parent or not model_store.exists(root.parent):  # retention may have pruned lineage
            break
        root = model_store.load(root.parent)
    name = (info or {}).get("dataset", original)
    train = load_beir(get_settings().dataset(name), split="train")
    return get_encoder(None, base_max_seq_length(parent)).encode(sorted(train.queries.values()))


def unjudged_queries(domains: list[str], known: set[str], limit: int = 2000) -> list[str]:
    """Distinct query texts of the domains' traffic that carry no judgment: the live feedback log's records of those
    domains without any, and (offline, where the log is the simulator's) the domains' queries that no qrels judge.
    Judged queries (`known`) are left out: they are feedback already, or held out."""
    from autooptimizer.ml.feedback import split_query_id
    from autooptimizer.search.beir import load_beir
    from autooptimizer.settings import get_settings

    settings = get_settings()
    out: dict[str, None] = {}
    log = settings.feedback_log
    if log.is_file():
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines()[-20000:]:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            ds, _ = split_query_id(rec.get("dataset"), rec.get("query_id"))
            if ds in domains and not rec.get("judgments") and rec.get("query"):
                out[str(rec["query"])] = None
    for name in domains:
        ds = load_beir(settings.dataset(name))
        judged = set(ds.judged_queries())
        out.update({t: None for q, t in sorted(ds.queries.items()) if q not in judged})
    return [t for t in out if t not in known][:limit]


def _new_version(prefix: str, payload: dict) -> str:
    from autooptimizer.search.model_store import content_version

    return content_version(prefix, payload)


# -------------------------------------------------------------------------------------------------------------------
def train_ltr(dataset, parent, cfg: TrainConfig, scratch: Path, collection=None, progress: Progress | None = None,
              ref: np.ndarray | None = None):
    """Returns (spec, weights folder under `scratch`, report dict)."""
    from autooptimizer.ml.ltr import fit_expert
    from autooptimizer.search.encoder import base_max_seq_length
    from autooptimizer.search.model_store import ModelSpec
    from autooptimizer.search.rerankers.ltr_fusion import LtrParams
    from autooptimizer.settings import get_settings

    collection = collection or domain_collection(dataset)
    domain = "+".join(dataset.manifest.domains) or "domain"
    name = f"{domain}-{dataset.manifest.hash[:8]}"
    if parent.kind == "ltr_fusion":
        base = LtrParams.model_validate(parent.params)
        fallback, experts = base.fallback, [e for e in base.experts if not e.name.startswith(f"{domain}-")]
        served = ModelSpec.model_validate(fallback)  # what the parent really serves: its own fallback
        parent_w, parent_depth = float(served.fusion_weight), served.rerank_depth
    else:
        fallback, experts, parent_w, parent_depth = parent.content(), [], parent.fusion_weight, parent.rerank_depth
    ref = reference_queries(parent, cfg.original) if ref is None else ref
    others = [ref]
    if parent.kind == "ltr_fusion":
        for e in experts:
            with np.load(Path(parent.resolved_encoder_path()) / e.file) as z:
                others.append(z["mem_q"])
    qrels = dataset.qrels()
    judged = {d for rel in qrels.values() for d, g in rel.items() if g > 0}
    owned = sorted({d.split("/", 1)[0] for d in judged} - {Path(cfg.original).name})  # corpora the expert owns
    unjudged = unjudged_queries(dataset.manifest.domains, set(dataset.original_queries().values())) \
        if cfg.adaptation.unjudged else []
    params, arrays, report = fit_expert(
        name, dataset.original_queries(), qrels, collection, parent_w, seed=cfg.seed, depth=cfg.depth,
        augmented=dataset.augmented_queries(), threads=get_settings().threads, progress=progress,
        deadline=time.perf_counter() + cfg.time_budget_s, gate_negatives=np.vstack(others), bags=cfg.bags,
        parent_depth=parent_depth, domains=owned, adaptation=cfg.adaptation, unjudged=unjudged,
        max_seq_length=base_max_seq_length(parent))
    tmp = scratch / "ltr"
    (tmp / "experts").mkdir(parents=True)
    if parent.kind == "ltr_fusion":
        for e in experts:
            shutil.copy(Path(parent.resolved_encoder_path()) / e.file, tmp / e.file)
    np.savez(tmp / params.file, allow_pickle=True, **arrays)  # numpy's default; named, it cannot come from **arrays
    np.savez(tmp / "reference.npz", q=ref.astype(np.float32))
    lp = LtrParams(experts=[*experts, params], fallback=fallback, max_seq_length=base_max_seq_length(parent))
    version = _new_version("ltr", {"params": lp.model_dump(), "dataset": dataset.manifest.hash, "seed": cfg.seed,
                                   "parent": parent.version, "depth": cfg.depth})
    spec = ModelSpec(version=version, kind="ltr_fusion", fusion_weight=1.0, rerank_depth=cfg.depth,
                     params=lp.model_dump(), parent=parent.version,
                     notes=f"ltr_fusion expert {name} on dataset {dataset.manifest.hash}, gated; falls back to "
                           f"{ModelSpec.model_validate(fallback).version}")
    return spec, tmp, report.model_dump()


# -------------------------------------------------------------------------------------------------------------------
def _triplets(dataset, cfg: TrainConfig) -> list[tuple[str, str, str | None]]:
    """(query text, positive doc id, hard negative doc id) for every positive pair."""
    negs: dict[str, list[str]] = {}
    for p in dataset.pairs:
        if p.kind != "positive":
            negs.setdefault(p.query_key, []).append(p.doc_id)
    texts = dataset.original_queries()
    aug = dataset.augmented_queries()
    rng = random.Random(cfg.seed)
    out = []
    for p in dataset.pairs:
        if p.kind == "positive" and p.query_key in texts:
            ns = negs.get(p.query_key, [])
            out.append((texts[p.query_key], p.doc_id, rng.choice(ns) if ns else None))
    for src, text in aug:
        pos = [p.doc_id for p in dataset.pairs if p.query_key == src and p.kind == "positive"]
        if pos:
            ns = negs.get(src, [])
            out.append((text, rng.choice(pos), rng.choice(ns) if ns else None))
    return out


def _replay(cfg: TrainConfig, parent) -> list[tuple[str, str, str | None]]:
    """A sample of the original domain's training pairs (query, positive text as an id-less doc)."""
    if cfg.replay_pairs <= 0:
        return []
    from autooptimizer.search.beir import load_beir
    from autooptimizer.settings import get_settings

    try:
        train = load_beir(get_settings().dataset(cfg.original), split="train")
    except Exception:  # noqa: BLE001 - no original data available: train without replay, recorded in the report
        return []
    pairs: list[tuple[str, str, str | None]] = [
        (train.queries[q], f"@replay:{d}", None) for q, j in sorted(train.qrels.items()) for d, g in j.items()
        if g > 0 and q in train.queries and d in train.corpus]
    random.Random(cfg.seed).shuffle(pairs)
    texts = {f"@replay:{d}": train.corpus[d].full_text for _, d, _ in pairs[: cfg.replay_pairs]
             for d in [d.removeprefix("@replay:")]}
    _REPLAY_TEXT.update(texts)
    return pairs[: cfg.replay_pairs]


_REPLAY_TEXT: dict[str, str] = {}


def _pseudo_pairs(collection, cfg: TrainConfig) -> list[tuple[str, str, str | None]]:
    """(pseudo-query, source doc id, None) rows cut from the domain corpus (`cfg.adaptation.pseudo_queries`): the
    unsupervised in-domain pairs of GPL-style adaptation without a generator (Wang et al. 2022, GPL; the inverse
    cloze task of Lee et al. 2019); in-batch documents are their negatives."""
    from autooptimizer.ml.adapt import pseudo_queries

    ad = cfg.adaptation
    if not ad.pseudo_queries:
        return []
    pairs = pseudo_queries(collection.doc_ids, collection.text, ad.pseudo_queries, cfg.seed, ad.pseudo_kind)
    return [(q, d, None) for d, q in pairs]


def _doc_text(collection, doc_id: str) -> str:
    return _REPLAY_TEXT[doc_id] if doc_id.startswith("@replay:") else collection.text(doc_id)


def _split_dev(items: list, frac: float, seed: int) -> tuple[list, list]:
    keys = sorted({t[0] for t in items})
    random.Random(seed).shuffle(keys)
    dev_keys = set(keys[: max(1, int(round(frac * len(keys))))])
    return [t for t in items if t[0] not in dev_keys], [t for t in items if t[0] in dev_keys]


def train_neural(dataset, parent, cfg: TrainConfig, scratch: Path, collection=None, progress: Progress | None = None,
                 checkpoint_dir: Path | None = None, on_loss: LossHook | None = None):
    """Bi-encoder (MNRL) or cross-encoder (listwise) fine-tuning. Returns (spec, weights folder under `scratch`,
    report); the best checkpoint goes to `checkpoint_dir` when given (kept), else under `scratch`."""
    import torch
    from tqdm.auto import tqdm

    from autooptimizer.search.encoder import base_model_path
    from autooptimizer.search.model_store import ModelSpec

    seed_everything(cfg.seed)
    device, amp_dtype = pick_device()
    collection = collection or domain_collection(dataset)
    say = progress or (lambda _m, _f: None)
    items = _triplets(dataset, cfg)
    if not items:
        raise InputError("The dataset has no positive pair to train on.", "Rebuild it from feedback with judgments.")
    train_items, dev_items = _split_dev(items, cfg.dev_fraction, cfg.seed)
    pq = _pseudo_pairs(collection, cfg)
    train_items = train_items + pq + _replay(cfg, parent)
    random.Random(cfg.seed).shuffle(train_items)
    start_path = parent.resolved_encoder_path() if parent.kind == cfg.trainer and parent.encoder_path else None
    if cfg.trainer == "bi_encoder":
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(start_path or base_model_path(), device=device)
        model.max_seq_length = cfg.max_seq_length
        net = torch_module(model[0].auto_model)
        tok = model.tokenizer

        def embed(texts: list[str]):
            feats = tok(texts, padding=True, truncation=True, max_length=cfg.max_seq_length, return_tensors="pt")
            feats = {k: v.to(device) for k, v in feats.items()}
            out = net(**feats).last_hidden_state
            mask = feats["attention_mask"].unsqueeze(-1).to(out.dtype)
            pooled = (out * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

        def batch_loss(batch) -> torch.Tensor:
            q = embed([b[0] for b in batch])
            docs = [_doc_text(collection, b[1]) for b in batch]
            negs = [_doc_text(collection, b[2]) for b in batch if b[2] is not None]
            d = embed(docs + negs)
            logits = q @ d.T * 20.0
            return torch.nn.functional.cross_entropy(logits.float(), torch.arange(len(batch), device=device))

        def dev_score() -> float:
            net.eval()
            with torch.no_grad():
                hits = []
                for qt, pos, neg in dev_items[:64]:
                    v = embed([qt, _doc_text(collection, pos)] + ([_doc_text(collection, neg)] if neg else []))
                    s = (v[1:] @ v[0]).float().cpu().numpy()
                    hits.append(float(s[0] >= s.max()))
            net.train()
            return float(np.mean(hits)) if hits else 0.0
    else:
        from sentence_transformers import CrossEncoder

        ce = CrossEncoder(start_path or base_model_path(), num_labels=1, max_length=cfg.max_seq_length, device=device)
        net, tok, model = torch_module(ce.model), ce.tokenizer, ce

        def logits_for(q: str, docs: list[str]):
            feats = tok([q] * len(docs), docs, padding=True, truncation=True, max_length=cfg.max_seq_length,
                        return_tensors="pt")
            return net(**{k: v.to(device) for k, v in feats.items()}).logits.view(-1).float()

        negs_of: dict[str, list[str]] = {}
        for p in dataset.pairs:
            if p.kind != "positive":
                negs_of.setdefault(p.query_key, []).append(p.doc_id)
        text_key = {t: k for k, t in dataset.original_queries().items()}

        def group(item) -> list[str]:
            qt, pos, _ = item
            ns = negs_of.get(text_key.get(qt, ""), [])[: cfg.hard_negatives]
            if not ns:
                ns = [d for d in random.sample(collection.doc_ids, k=min(cfg.hard_negatives, len(collection)))
                      if d != pos]
            return [_doc_text(collection, pos)] + [_doc_text(collection, n) for n in ns]

        def batch_loss(batch) -> torch.Tensor:
            losses = [-torch.log_softmax(logits_for(b[0], group(b)), 0)[0] for b in batch]
            return torch.stack(losses).mean()

        def dev_score() -> float:
            net.eval()
            with torch.no_grad():
                hits = [float(logits_for(b[0], group(b)).argmax().item() == 0) for b in dev_items[:32]]
            net.train()
            return float(np.mean(hits)) if hits else 0.0

    net.to(device)
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr)
    ckpt = Path(checkpoint_dir or scratch / "checkpoints") / "best"
    t0 = time.perf_counter()
    best_dev, bad, step, losses, seen = dev_score(), 0, 0, [], 0
    history = [{"step": 0, "dev": round(best_dev, 4)}]
    shutil.rmtree(ckpt, ignore_errors=True)  # a reused artifacts_dir: an earlier run's files must not join these
    model.save(str(ckpt))
    bar = tqdm(total=cfg.max_steps, desc=f"train {cfg.trainer}", unit="step", disable=False, leave=False)
    stop_reason = "max_steps"
    try:
        while step < cfg.max_steps:
            for i in range(0, len(train_items), cfg.batch_size):
                batch = train_items[i : i + cfg.batch_size]
                if len(batch) < 2:
                    continue
                with torch.autocast(device_type="cuda", dtype=amp_dtype) if amp_dtype else _null():
                    loss = batch_loss(batch)
                if on_loss is not None:
                    loss = on_loss(step + 1, loss)
                if not torch.isfinite(loss):
                    raise InputError(f"Training loss became {loss.item()} at step {step + 1} ({cfg.trainer}).",
                                     "Lower --lr or check the dataset; no model was stored or registered.")
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                opt.step()
                step += 1
                seen += len(batch)
                losses.append(round(float(loss.item()), 5))
                bar.update(1)
                say(f"step {step}/{cfg.max_steps} loss {losses[-1]:.4f}", step / cfg.max_steps)
                if step % cfg.eval_every == 0:
                    dev = dev_score()
                    history.append({"step": step, "dev": round(dev, 4), "loss": losses[-1]})
                    if dev > best_dev + 1e-4:
                        best_dev, bad = dev, 0
                        model.save(str(ckpt))
                    else:
                        bad += 1
                        if bad >= cfg.patience:
                            stop_reason = "early_stopping"
                            break
                if step >= cfg.max_steps:
                    break
                if time.perf_counter() - t0 > cfg.time_budget_s:
                    stop_reason = "time_budget"
                    break
            if stop_reason in ("early_stopping", "time_budget"):
                break
    finally:
        bar.close()
    train_s = time.perf_counter() - t0
    # keep the final state when it is at least as good on dev as the best checkpoint
    final_dev = dev_score()
    if final_dev >= best_dev:
        model.save(str(ckpt))
        best_dev = final_dev
    weights = scratch / "weights"
    shutil.copytree(ckpt, weights)
    fusion_weight, by_w = _retune_weight(cfg, parent, weights, collection, dataset, dev_items)
    kind = cfg.trainer
    version = _new_version(kind[:2] + "ft", {"dataset": dataset.manifest.hash, "cfg": cfg.model_dump(),
                                             "parent": parent.version, "steps": step})
    ad = cfg.adaptation
    params: dict = {"max_seq_length" if kind == "bi_encoder" else "max_length": cfg.max_seq_length}
    if ad.pseudo_queries:  # what the weights learnt from, beside the dataset hash
        params["adaptation"] = {"pseudo_queries": ad.pseudo_queries, "pseudo_kind": ad.pseudo_kind, "made": len(pq)}
    spec = ModelSpec(version=version, kind=kind, fusion_weight=fusion_weight,
                     rerank_depth=parent.rerank_depth if kind == "bi_encoder" else min(parent.rerank_depth, 30),
                     params=params, parent=parent.version,
                     notes=f"{kind} fine-tuned on dataset {dataset.manifest.hash} ({step} steps, {stop_reason})")
    report = {"steps": step, "stop_reason": stop_reason, "best_dev": round(best_dev, 4), "history": history,
              "loss_curve": losses[:: max(1, len(losses) // 50)], "samples": seen,
              "samples_per_s": round(seen / train_s, 2) if train_s > 0 else None, "device": device,
              "fusion_weight_by_dev": by_w, "replay_pairs": sum(t[1].startswith("@replay:") for t in train_items),
              "pseudo_queries": {"asked": ad.pseudo_queries, "made": len(pq), "kind": ad.pseudo_kind,
                                 "examples": [q for q, _, _ in pq[:3]]} if ad.pseudo_queries else None}
    return spec, weights, report


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _retune_weight(cfg: TrainConfig, parent, weights: Path, collection, dataset, dev_items) -> tuple[float, dict]:
    """Fusion weight by nDCG@10 on the dev slice's queries (original queries only), over a coarse grid."""
    from autooptimizer.search.metrics_eval import ndcg_at_10
    from autooptimizer.search.model_store import ModelSpec
    from autooptimizer.search.pipeline import SearchPipeline, runs_for_weights

    texts = dataset.original_queries()
    dev_q = {k: t for k, t in texts.items() if t in {d[0] for d in dev_items}}
    if not dev_q:
        return parent.fusion_weight, {}
    params = {"max_seq_length": cfg.max_seq_length} if cfg.trainer == "bi_encoder" else {"max_length": 256}
    probe = ModelSpec(version="probe-tune", kind=cfg.trainer, encoder_path=str(weights), fusion_weight=0.5,
                      rerank_depth=parent.rerank_depth if cfg.trainer == "bi_encoder" else 30, params=params)
    pipe = SearchPipeline(probe, collection).warm(progress=True)
    grid = [0.3, 0.5, 0.6, 0.7, 0.9]
    runs = runs_for_weights(pipe.rerank_many(dev_q), grid, k=10)
    qrels = {k: v for k, v in dataset.qrels().items() if k in dev_q}
    by_w = {str(w): round(ndcg_at_10(r, qrels), 4) for w, r in runs.items()}
    best = max(grid, key=lambda w: (by_w[str(w)], -abs(w - parent.fusion_weight)))
    return best, by_w


def _abandon(run_id: str, stored: str | None) -> None:
    """A failed training (a full disk in model_store.save, an MLflow error): its run ends FAILED and the version it
    stored, unless the registry already knows it, is removed, so nothing half-made is left to promote. Errors here
    are swallowed (the caller re-raises the failure that matters); where the registry cannot be read, the version
    stays (a registered version's folder must never vanish)."""
    import contextlib

    from autooptimizer.ml import model_registry as registry
    from autooptimizer.search import model_store

    with contextlib.suppress(Exception):
        registry.end_run(run_id, status="FAILED")
    with contextlib.suppress(Exception):
        if stored is not None and model_store.exists(stored) and not registry.is_registered(stored):
            shutil.rmtree(model_store.version_dir(stored))


# -------------------------------------------------------------------------------------------------------------------
def train(
    dataset_ref: str,
    parent_version: str | None = None,
    cfg: TrainConfig | None = None,
    collection: Collection | None = None,
    progress: Progress | None = None,
    artifacts_dir: str | Path | None = None,
    set_challenger: bool = True,
    on_loss: LossHook | None = None,
) -> TrainResult:
    """Train a challenger on a stored dataset from `parent_version` (default: the champion), store it, log the run
    to MLflow, register the version and point `challenger` at it. On any failure nothing is stored or registered.
    `on_loss(step, loss)` sees each neural training step's loss and returns the loss to use."""
    from autooptimizer.ml import model_registry as registry
    from autooptimizer.ml.dataset import load_dataset
    from autooptimizer.search import aliases, model_store

    cfg = cfg or TrainConfig()
    t0 = time.perf_counter()
    from autooptimizer.ml.forgetting import assert_unseen

    dataset = load_dataset(dataset_ref)
    assert_unseen(((q.dataset, q.query_id) for q in dataset.queries), f"Dataset {dataset.manifest.hash}")
    parent = model_store.load(parent_version or aliases.require_alias(aliases.CHAMPION))
    run_id = registry.start_run(f"train-{cfg.trainer}", {**cfg.model_dump(), "dataset": dataset.manifest.hash,
                                                          "parent": parent.version},
                                tags={"autoopt.trainer": cfg.trainer})
    stored: str | None = None  # a version this call added to the model store, removed again if the run fails
    try:
        # one scratch folder per run, removed on every path: a loop that retrains for months must not fill the disk
        with tempfile.TemporaryDirectory(prefix="autoopt-train-") as tmp:
            if cfg.trainer == "ltr":
                seed_everything(cfg.seed)
                spec, weights, report = train_ltr(dataset, parent, cfg, Path(tmp), collection, progress)
                device, steps, sps = "cpu", int(report.get("adapter_epochs", 0)), None
            else:
                ckpt = Path(artifacts_dir) / "checkpoints" if artifacts_dir else None
                spec, weights, report = train_neural(dataset, parent, cfg, Path(tmp), collection, progress, ckpt,
                                                     on_loss)
                device, steps, sps = report["device"], report["steps"], report["samples_per_s"]
            metrics = {k: float(v) for k, v in report.items()
                       if isinstance(v, int | float) and math.isfinite(float(v))}
            for i, loss in enumerate(report.get("loss_curve", [])):
                registry.log_metrics(run_id, {"loss": loss}, step=i)
            registry.log_metrics(run_id, metrics)
            stored = None if model_store.exists(spec.version) else spec.version
            model_store.save(spec, weights_dir=weights, extra={"train_report.json": {**report, "run_id": run_id}})
        reg = registry.register_model(spec.version, run_id)
    except BaseException:
        _abandon(run_id, stored)
        raise
    registry.end_run(run_id)
    registry.sync_bootstrap_aliases()  # the bootstrapped champion is also `gold`: mirror aliases.json into MLflow
    names = {}
    if set_challenger:
        registry.set_alias("challenger", spec.version)
        names = aliases.all_aliases()
    if artifacts_dir:
        out = Path(artifacts_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_result.json").write_text(json.dumps({"version": spec.version, "run_id": run_id,
                                                           "mlflow_version": reg.mlflow_version, **report},
                                                          indent=2, default=str))
    return TrainResult(version=spec.version, parent=parent.version, trainer=cfg.trainer, run_id=run_id,
                       device=device, steps=steps, samples_per_s=sps, metrics=metrics, report=report,
                       wall_seconds=round(time.perf_counter() - t0, 1), aliases=names)
