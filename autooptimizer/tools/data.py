"""The data agent's tools: build a dataset from the feedback log, explain the reranker, augment the weak slice."""

from __future__ import annotations

from typing import Any, Literal, cast

from pydantic import BaseModel, Field

from autooptimizer.errors import InputError
from autooptimizer.tools.context import ToolContext
from autooptimizer.tools.registry import tool


class AugmentRecipe(BaseModel):
    """How an augmented CSV was made (augment_dataset's result), recorded in the dataset's manifest and hash."""

    methods: dict[str, int]
    rows: int = Field(ge=0)
    seed: int
    weak_queries: int = Field(ge=0)


class BuildDatasetArgs(BaseModel):
    feedback_path: str | None = Field(None, description="feedback log; default AUTOOPT_HOME/feedback/feedback.jsonl")
    parent_version: str | None = Field(None, description="model version that served the traffic")
    hard_negatives: int = Field(10, ge=0, le=100)
    augmented_csv: str | None = Field(None, description="augmented_dataset.csv to add")
    from_dataset: str | None = Field(None, description="dataset hash the augmented CSV was made from")
    augmentation: AugmentRecipe | None = Field(None, description="the augmented CSV's recipe (augment_dataset's "
                                               "methods, rows, seed, weak_queries)")


class ExplainRerankerArgs(BaseModel):
    dataset: str = Field(description="dataset hash of the shifted traffic")
    model: str = Field("champion", description="alias or version to explain")
    explainer: Literal["shap", "lime"] = "shap"
    queries: int = Field(3, ge=1, le=10)
    max_evals: int = Field(64, ge=8, le=512)
    out_dir: str | None = Field(None, description="folder for diagnostic_report.json")
    reference_data: str = Field("scifact", description="BEIR data the model was trained on (for the term shift)")
    reference_split: str | None = Field("train", description="its split; never a test split")


class AugmentDatasetArgs(BaseModel):
    dataset: str
    out_csv: str
    size: int = Field(100, ge=1, le=5000)
    mix: list[Literal["keyboard", "ocr", "word_swap", "word_delete", "spelling", "synonym"]] | None = None
    seed: int = 0
    weak_fraction: float = Field(0.5, gt=0, le=1)


@tool(name="build_dataset", owner="data", risk="change")
def build_dataset(args: BuildDatasetArgs, ctx: ToolContext) -> dict[str, Any]:
    """Build an immutable, hash-addressed training dataset (positives, served hard negatives) from the feedback log."""
    from autooptimizer.ml.dataset import build_dataset as build
    from autooptimizer.ml.dataset import datasets_root

    fb = args.feedback_path or str(ctx.settings.feedback_log)
    m = build(fb, parent_version=args.parent_version, hard_negatives_k=args.hard_negatives,
              augmented_csv=args.augmented_csv, parent_dataset=args.from_dataset,
              augmentation=args.augmentation.model_dump() if args.augmentation else None)
    return {**m.model_dump(mode="json"), "path": str(datasets_root() / m.hash)}


def _baseline_ndcg10(version: str) -> float | None:
    """The model's original-domain NDCG@10 from its bootstrap record (the diagnosis compares the traffic's with it);
    None for a model without one."""
    from autooptimizer.search import model_store

    try:
        boot = model_store.read_extra(version, "bootstrap.json")
    except InputError:  # not a stored version name (e.g. a model folder)
        return None
    value: object = cast("dict[str, Any]", boot).get("test_ndcg10") if isinstance(boot, dict) else None
    return float(value) if isinstance(value, int | float) else None


@tool(name="explain_reranker", owner="data", risk="read")
def explain_reranker(args: ExplainRerankerArgs, ctx: ToolContext) -> dict[str, Any]:
    """SHAP (or LIME) token attributions on the worst-served queries, query-term shift (JSD) and a verdict."""
    from autooptimizer.ml.dataset import load_dataset
    from autooptimizer.ml.diagnose import diagnose, write_report
    from autooptimizer.ml.evaluate import resolve_model
    from autooptimizer.search.beir import load_beir, load_collection

    settings = ctx.settings
    ds = load_dataset(args.dataset)
    spec = resolve_model(args.model)
    if args.reference_split == "test":
        raise InputError("The reference for the term shift must be training data, not a test split.",
                         "Pass reference_split='train' (or leave it unset for a folder without splits).")
    train_q = list(load_beir(settings.dataset(args.reference_data), split=args.reference_split).queries.values())
    rep = diagnose(spec, load_collection(ds.manifest.domains), ds, train_q, n_queries=args.queries,
                   explainer=args.explainer, max_evals=args.max_evals,
                   baseline_ndcg10=_baseline_ndcg10(spec.version))
    path = write_report(rep, args.out_dir or settings.path("diagnostics", ds.manifest.hash, "x").parent)
    return {"verdict": rep.verdict, "evidence": rep.evidence, "jsd": rep.term_shift.jsd,
            "under_weighted_terms": rep.under_weighted_terms[:10], "report": str(path)}


@tool(name="augment_dataset", owner="data", risk="change")
def augment_dataset(args: AugmentDatasetArgs, ctx: ToolContext) -> dict[str, Any]:
    """Write augmented_dataset.csv: nlpaug variants of the weak slice's queries (seeded, method + source row)."""
    from autooptimizer.ml.augment import augment_dataset as augment

    rep = augment(args.dataset, args.out_csv, size=args.size, mix=list(args.mix) if args.mix is not None else None,
                  seed=args.seed, weak_fraction=args.weak_fraction)
    return rep.model_dump()
