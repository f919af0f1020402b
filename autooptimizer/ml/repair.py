"""A whole corpus-shift repair against the current champion, as steps the loop can also run one by one.

split -> feedback -> dataset -> diagnose -> augment -> train -> evaluate. The new domain's judged queries are split
by the seed: half become simulated feedback (served by the champion, judged from qrels, written in the service's
feedback-log format), half are held out. With `holdout_qids`, exactly those are held out. Held-out queries are read
by nothing but the final evaluation; SciFact `test` is only evaluated, never trained or tuned on.

Each step writes its artifact into `artifacts_dir` (split.json, feedback.jsonl, dataset_manifest.yaml,
diagnostic_report.json, augmented_dataset.csv, train_result.json, repair_result.json) and records its outcome in
repair_state.json, so `Repair(artifacts_dir, ...)` can resume or run a single step.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from autooptimizer.errors import InputError

STEPS = ("split", "feedback", "dataset", "diagnose", "augment", "train", "evaluate")
OnStep = Callable[[str, str, dict], None]  # (step, "start" | "done", info)


class StepRecord(BaseModel):
    step: str
    seconds: float
    artifact: str | None = None
    info: dict[str, Any] = Field(default_factory=dict)


class RepairState(BaseModel):
    domain_data: str
    seed: int
    original: str
    trainer: str
    champion: str
    holdout_file: str | None = None
    steps: dict[str, StepRecord] = Field(default_factory=dict)


class Scores(BaseModel):
    new_domain_ndcg_at_10: float = Field(alias="new_domain_ndcg@10")
    original_ndcg_at_10: float = Field(alias="original_ndcg@10")
    new_domain_mrr_at_10: float = Field(alias="new_domain_mrr@10")
    new_domain_recall_at_100: float = Field(alias="new_domain_recall@100")
    version: str
    model_config = {"populate_by_name": True}


class RepairResult(BaseModel):
    champion: dict[str, Any]
    challenger: dict[str, Any]
    gold: dict[str, Any] | None
    promotable: bool
    reasons: list[str]
    artifacts_dir: str
    dataset: str
    run_id: str | None
    verdict: str | None
    holdout_queries: int
    feedback_queries: int
    step_seconds: dict[str, float]

    def public(self) -> dict:
        return self.model_dump()


def _ts() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S")


class Repair:
    """One repair's state in `artifacts_dir`; each `step_*` method is idempotent once recorded."""

    def __init__(self, domain_data: str | Path, artifacts_dir: str | Path | None = None, seed: int = 0,
                 holdout_qids: str | Path | None = None, trainer: str = "ltr", original: str = "scifact",
                 augment_size: int | None = None, shap_queries: int = 3, on_step: OnStep | None = None,
                 env: str | None = None) -> None:
        from autooptimizer.search import aliases
        from autooptimizer.settings import get_settings

        settings = get_settings()
        self.domain_dir = settings.dataset(domain_data)
        self.original_dir = settings.dataset(original)
        if artifacts_dir:
            self.dir = Path(artifacts_dir)
            self.dir.mkdir(parents=True, exist_ok=True)
        else:  # a fresh folder each time: two repairs started in the same second must not share (and resume) one
            root = settings.path("repairs", "x").parent
            self.dir = Path(tempfile.mkdtemp(prefix=f"{self.domain_dir.name}-s{seed}-{_ts()}-", dir=root))
        self.on_step = on_step or (lambda _s, _p, _i: None)
        self.augment_size = augment_size
        self.shap_queries = shap_queries
        self.env = env
        state_path = self.dir / "repair_state.json"
        if state_path.is_file():
            self.state = RepairState.model_validate_json(state_path.read_text())
            if self.state.domain_data != str(self.domain_dir) or self.state.seed != seed:
                raise InputError(f"{self.dir} holds a repair of {self.state.domain_data} seed {self.state.seed}.",
                                 "Use a new --artifacts-dir for a different domain or seed.")
        else:
            self.state = RepairState(domain_data=str(self.domain_dir), seed=seed, original=str(self.original_dir),
                                     trainer=trainer, champion=aliases.require_alias(aliases.CHAMPION),
                                     holdout_file=str(holdout_qids) if holdout_qids else None)
            self._save()
        self._domain = None

    # -- plumbing ----------------------------------------------------------------------------------------------------
    def _save(self) -> None:
        (self.dir / "repair_state.json").write_text(self.state.model_dump_json(indent=2))

    def _record(self, step: str, t0: float, artifact: Path | None, info: dict) -> StepRecord:
        rec = StepRecord(step=step, seconds=round(time.perf_counter() - t0, 1),
                         artifact=str(artifact) if artifact else None, info=info)
        self.state.steps[step] = rec
        self._save()
        self.on_step(step, "done", {"seconds": rec.seconds, **info})
        return rec

    def _need(self, step: str) -> StepRecord:
        if step not in self.state.steps:
            raise InputError(f"Repair step {step!r} has not run yet in {self.dir}.", f"Run the {step} step first.")
        return self.state.steps[step]

    def domain(self):
        """(collection, judged queries, qrels with collection ids) of the new domain, loaded once."""
        if self._domain is None:
            from autooptimizer.ml.evaluate import load_split

            self._domain = load_split(self.domain_dir)
        return self._domain

    @property
    def champion(self):
        from autooptimizer.search import model_store

        return model_store.load(self.state.champion)

    # -- steps -------------------------------------------------------------------------------------------------------
    def step_split(self) -> StepRecord:
        from autooptimizer.ml.feedback import read_qids, split_judged

        if "split" in self.state.steps:
            return self.state.steps["split"]
        t0 = time.perf_counter()
        self.on_step("split", "start", {})
        _, queries, _ = self.domain()
        judged = sorted(queries)
        if self.state.holdout_file:
            held = set(read_qids(self.state.holdout_file))
            unknown = sorted(held - set(judged))
            if unknown:
                raise InputError(f"{len(unknown)} held-out ids are not judged queries of {self.domain_dir.name}: "
                                 f"{unknown[:5]}.", "List query ids from the dataset's qrels.")
            feedback = [q for q in judged if q not in held]
            holdout = sorted(held)
        else:
            feedback, holdout = split_judged(judged, self.state.seed)
        if len(feedback) < 4 or not holdout:
            raise InputError(f"Split gives {len(feedback)} feedback and {len(holdout)} held-out queries.",
                             "A repair needs at least 4 feedback queries and 1 held-out query.")
        path = self.dir / "split.json"
        path.write_text(json.dumps({"seed": self.state.seed, "feedback": feedback, "holdout": holdout}, indent=1))
        return self._record("split", t0, path, {"feedback": len(feedback), "holdout": len(holdout)})

    def _split(self) -> dict:
        return json.loads(Path(self._need("split").artifact).read_text())

    def step_feedback(self) -> StepRecord:
        from autooptimizer.ml.feedback import simulate_feedback

        if "feedback" in self.state.steps:
            return self.state.steps["feedback"]
        t0 = time.perf_counter()
        self.on_step("feedback", "start", {})
        collection, queries, qrels = self.domain()
        fb = self._split()["feedback"]
        path = simulate_feedback(self.champion, collection, {q: queries[q] for q in fb}, qrels,
                                 self.dir / "feedback.jsonl", dataset=collection.name)
        return self._record("feedback", t0, path, {"records": len(fb), "served_by": self.state.champion})

    def step_dataset(self, augmented_csv: Path | None = None, recipe: dict | None = None,
                     name: str = "dataset") -> StepRecord:
        from autooptimizer.ml.dataset import MANIFEST, build_dataset, datasets_root

        if name in self.state.steps:
            return self.state.steps[name]
        t0 = time.perf_counter()
        self.on_step(name, "start", {})
        parent_ds = self.state.steps["dataset"].info["hash"] if augmented_csv else None
        m = build_dataset(self._need("feedback").artifact, parent_version=self.state.champion,
                          augmented_csv=augmented_csv, parent_dataset=parent_ds, augmentation=recipe)
        src = datasets_root() / m.hash / MANIFEST
        out = self.dir / (f"base.{MANIFEST}" if name == "dataset" else MANIFEST)
        shutil.copyfile(src, out)
        shutil.copyfile(src, self.dir / MANIFEST)  # always the manifest of the dataset training will use
        return self._record(name, t0, out, {"hash": m.hash, **m.counts.model_dump()})

    def step_diagnose(self, explainer: str = "shap") -> StepRecord:
        from autooptimizer.ml.dataset import load_dataset
        from autooptimizer.ml.diagnose import diagnose, write_report
        from autooptimizer.search import model_store
        from autooptimizer.search.beir import load_beir

        if "diagnose" in self.state.steps:
            return self.state.steps["diagnose"]
        t0 = time.perf_counter()
        self.on_step("diagnose", "start", {})
        ds = load_dataset(self._need("dataset").info["hash"])
        collection, _, _ = self.domain()
        train_q = list(load_beir(self.original_dir, split="train").queries.values())
        boot = model_store.read_extra(self.state.champion, "bootstrap.json") or {}
        report = diagnose(self.champion, collection, ds, train_q, n_queries=self.shap_queries,
                          explainer=explainer, baseline_ndcg10=boot.get("test_ndcg10"))
        path = write_report(report, self.dir)
        return self._record("diagnose", t0, path, {"verdict": report.verdict, "jsd": report.term_shift.jsd,
                                                   "explained": len(report.queries)})

    def step_augment(self, size: int | None = None, mix: list[str] | None = None) -> StepRecord:
        from autooptimizer.ml.augment import augment_dataset

        if "augment" in self.state.steps:
            return self.state.steps["augment"]
        t0 = time.perf_counter()
        self.on_step("augment", "start", {})
        base = self._need("dataset")
        n = size if size is not None else (self.augment_size if self.augment_size is not None
                                           else max(8, base.info["queries"]))
        rep = augment_dataset(base.info["hash"], self.dir / "augmented_dataset.csv", size=n, mix=mix,
                              seed=self.state.seed)
        self._record("augment", t0, Path(rep.path), {"rows": rep.rows, "methods": rep.methods,
                                                     "weak_queries": rep.weak_queries})
        final = self.step_dataset(Path(rep.path), recipe=rep.recipe(), name="dataset_final")
        self.state.steps["augment"].info["dataset"] = final.info["hash"]
        self._save()
        return self.state.steps["augment"]

    def step_train(self, cfg=None) -> StepRecord:
        from autooptimizer.ml.train import TrainConfig, train

        if "train" in self.state.steps:
            return self.state.steps["train"]
        t0 = time.perf_counter()
        self.on_step("train", "start", {"trainer": self.state.trainer})
        ds = (self.state.steps.get("dataset_final") or self._need("dataset")).info["hash"]
        cfg = cfg or TrainConfig(trainer=self.state.trainer, seed=self.state.seed, original=self.state.original)
        collection, _, _ = self.domain()
        res = train(ds, parent_version=self.state.champion, cfg=cfg, collection=collection, artifacts_dir=self.dir,
                    progress=lambda m, f: self.on_step("train", "progress", {"message": m, "fraction": f}))
        return self._record("train", t0, self.dir / "train_result.json",
                            {"version": res.version, "run_id": res.run_id, "dataset": ds,
                             "oof_ndcg10_fitted": res.report.get("oof_ndcg10_fitted"),
                             "oof_ndcg10_parent": res.report.get("oof_ndcg10_parent")})

    def _scores(self, spec, holdout: set[str]) -> dict[str, Any]:
        from autooptimizer.ml.evaluate import evaluate_spec

        new = evaluate_spec(spec, self.domain_dir, qids=holdout)
        orig = evaluate_spec(spec, self.original_dir, split="test")
        return Scores(**{"new_domain_ndcg@10": new.ndcg_at_10, "original_ndcg@10": orig.ndcg_at_10,
                         "new_domain_mrr@10": new.mrr_at_10, "new_domain_recall@100": new.recall_at_100,
                         "version": spec.version}).model_dump(by_alias=True)

    def step_evaluate(self) -> RepairResult:
        from autooptimizer.ml.evaluate import promotion_rule
        from autooptimizer.search import aliases, model_store

        t0 = time.perf_counter()
        self.on_step("evaluate", "start", {})
        holdout = set(self._split()["holdout"])
        champ = self._scores(self.champion, holdout)
        challenger_v = self._need("train").info["version"]
        chall = self._scores(model_store.load(challenger_v), holdout)
        gold_v = aliases.get_alias(aliases.GOLD)
        gold = champ if gold_v in (None, self.state.champion) else self._scores(model_store.load(gold_v), holdout)
        decision = promotion_rule(champ, chall, gold, env=self.env)
        path = self.dir / "repair_result.json"
        self._record("evaluate", t0, path, {"promotable": decision.promotable})
        diag = self.state.steps.get("diagnose")
        result = RepairResult(
            champion=champ, challenger=chall, gold=gold if gold is not champ else None,
            promotable=decision.promotable, reasons=decision.reasons, artifacts_dir=str(self.dir),
            dataset=self._need("train").info["dataset"], run_id=self._need("train").info["run_id"],
            verdict=diag.info.get("verdict") if diag else None, holdout_queries=len(holdout),
            feedback_queries=len(self._split()["feedback"]),
            step_seconds={k: v.seconds for k, v in self.state.steps.items()})
        path.write_text(result.model_dump_json(indent=2))
        return result

    def run(self, skip: tuple[str, ...] = ()) -> RepairResult:
        """Every step in order (a step already recorded in the state is not rerun)."""
        self.step_split()
        self.step_feedback()
        self.step_dataset()
        if "diagnose" not in skip:
            self.step_diagnose()
        if "augment" not in skip:
            self.step_augment()
        self.step_train()
        return self.step_evaluate()


def repair(domain_data: str | Path, seed: int = 0, holdout_qids: str | Path | None = None,
           artifacts_dir: str | Path | None = None, on_step: OnStep | None = None, trainer: str = "ltr",
           skip: tuple[str, ...] = (), **kwargs: Any) -> RepairResult:
    """Run a whole repair; see `Repair` for the steps and their artifacts."""
    return Repair(domain_data, artifacts_dir, seed, holdout_qids, trainer, on_step=on_step, **kwargs).run(skip)
