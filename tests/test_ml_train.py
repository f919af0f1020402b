"""Training on tiny data: the ltr_fusion challenger (stored, registered, gated), SHAP on the trained model, NaN loss
and missing aliases leave the registry unchanged, the neural trainers run end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from autooptimizer.errors import InputError, NotFoundError
from autooptimizer.search import aliases, model_store
from autooptimizer.settings import get_settings


def _feedback_dataset(ml_world: dict, tmp_path: Path, parent=None) -> str:  # noqa: ANN001
    from autooptimizer.ml.dataset import build_dataset
    from autooptimizer.ml.evaluate import load_split
    from autooptimizer.ml.feedback import simulate_feedback, split_judged

    collection, queries, qrels = load_split(ml_world["data"] / "dom")
    fb, _ = split_judged(sorted(queries), seed=0)
    log = simulate_feedback(parent or ml_world["parent"], collection, {q: queries[q] for q in fb}, qrels,
                            tmp_path / "feedback.jsonl", dataset="dom")
    return build_dataset(log).hash


def _registry_state() -> tuple:
    from autooptimizer.ml import model_registry as registry

    c = registry.client()
    try:
        n = len(c.search_model_versions(f"name='{registry.REGISTERED_MODEL}'"))
    except Exception:  # noqa: BLE001
        n = 0
    return tuple(model_store.list_versions()), json.dumps(aliases.all_aliases(), sort_keys=True), n


def test_ltr_challenger_is_stored_registered_and_gated(ml_world: dict, tmp_path: Path) -> None:
    from autooptimizer.ml import model_registry as registry
    from autooptimizer.ml.evaluate import evaluate_spec
    from autooptimizer.ml.train import TrainConfig, train

    ds = _feedback_dataset(ml_world, tmp_path)
    res = train(ds, cfg=TrainConfig(trainer="ltr", original="orig", depth=20), artifacts_dir=tmp_path / "art")
    spec = model_store.load(res.version)
    assert spec.kind == "ltr_fusion" and spec.parent == "v1-parent" and spec.fusion_weight == 1.0
    assert aliases.get_alias("challenger") == res.version
    assert aliases.get_alias("champion") == "v1-parent", "training never touches the champion"
    weights = Path(spec.resolved_encoder_path())
    assert (weights / "reference.npz").is_file() and list((weights / "experts").glob("*.npz"))
    assert res.report["train_queries"] == 10 and set(res.report["weights"]) >= {"bm25", "cos", "adapted"}
    assert (tmp_path / "art" / "train_result.json").is_file()
    # MLflow: a finished run with params and metrics, a registered version with the challenger alias
    c = registry.client()
    run = c.get_run(res.run_id)
    assert run.info.status == "FINISHED" and run.data.params["trainer"] == "ltr"
    assert "oof_ndcg10_fitted" in run.data.metrics
    mv = registry.register_model(res.version)
    assert "challenger" in mv.aliases and mv.run_id == res.run_id
    # stored once: the registered source is the model-store folder, nothing copied into the run's artifacts
    source = c.get_model_version(registry.REGISTERED_MODEL, mv.mlflow_version).source
    assert source == model_store.version_dir(res.version).resolve().as_uri()
    assert not c.list_artifacts(res.run_id, "model")
    gold = registry.register_model("v1-parent")
    assert set(gold.aliases) == {"champion", "gold"}, "the bootstrapped champion is mirrored as gold"
    # gated: original-domain queries are served exactly as the parent serves them
    orig = get_settings().dataset("orig")
    assert evaluate_spec(spec, orig, split="test") == evaluate_spec(ml_world["parent"], orig, split="test")
    # ... while the new domain's queries are routed to the expert
    from autooptimizer.ml.evaluate import load_split
    from autooptimizer.search.rerankers import build_reranker

    collection, queries, _ = load_split(ml_world["data"] / "dom")
    rr = build_reranker(spec, collection)
    routes = [rr.route(v) for v in rr.encoder.encode(list(queries.values()))]
    assert sum(r == 0 for r in routes) >= 0.8 * len(routes)
    assert spec.params["experts"][0]["domains"] == ["dom"], "it owns the new corpus, never the original one"
    cv_table = res.report["selection"]["cv_ndcg10"]
    assert set(cv_table) == {"parent", "listnet@0.01", "ascent@0.5", "blend"}
    # an expert whose CV showed harm is stored disabled: its domain gets exactly the parent's ranking
    params = json.loads(json.dumps(spec.params))
    for e in params["experts"]:
        e["enabled"] = False
    off = spec.model_copy(update={"params": params})  # same weights folder, experts switched off
    dom = ml_world["data"] / "dom"
    assert evaluate_spec(off, dom) == evaluate_spec(ml_world["parent"], dom)


def test_shap_report_on_the_trained_model(ml_world: dict, tmp_path: Path) -> None:
    from autooptimizer.ml.dataset import load_dataset
    from autooptimizer.ml.diagnose import diagnose, write_report
    from autooptimizer.ml.train import TrainConfig, train
    from autooptimizer.search.beir import load_beir, load_collection

    ds_hash = _feedback_dataset(ml_world, tmp_path)
    res = train(ds_hash, cfg=TrainConfig(trainer="ltr", original="orig", depth=20))
    spec = model_store.load(res.version)
    ds = load_dataset(ds_hash)
    train_q = list(load_beir(get_settings().dataset("orig"), split="train").queries.values())
    rep = diagnose(spec, load_collection(["dom"]), ds, train_q, n_queries=2, explainer="shap", max_evals=40)
    path = write_report(rep, tmp_path / "diag")
    data = json.loads(path.read_text())
    assert set(data) >= {"queries", "under_weighted_terms", "term_shift", "verdict", "evidence", "model_version"}
    assert data["verdict"] == "corpus_shift", data["evidence"]
    assert data["term_shift"]["oov_share"] >= 0.5 and 0 < data["term_shift"]["jsd"] <= 1
    assert len(data["queries"]) == 2
    for q in data["queries"]:
        assert q["method"] == "shap" and q["doc_id"].startswith("dom/")
        vals = [a["value"] for a in q["attributions"]]
        assert vals and any(abs(v) > 1e-6 for v in vals), "SHAP attributions are non-zero"
    # LIME, the cheaper explainer, gives the same structure
    lime = diagnose(spec, load_collection(["dom"]), ds, train_q, n_queries=1, explainer="lime")
    assert lime.queries[0].method == "lime" and any(abs(a.value) > 0 for a in lime.queries[0].attributions)


def test_nan_loss_and_missing_alias_leave_registry_unchanged(ml_world: dict, tmp_path: Path) -> None:
    from autooptimizer.ml import model_registry as registry
    from autooptimizer.ml.train import TrainConfig, train

    ds = _feedback_dataset(ml_world, tmp_path)
    before = _registry_state()
    with pytest.raises(InputError, match="loss became nan"):
        train(ds, cfg=TrainConfig(trainer="bi_encoder", original="orig", max_steps=3, batch_size=4,
                                  replay_pairs=0), on_loss=lambda step, loss: loss * float("nan"))
    assert _registry_state() == before
    c = registry.client()
    runs = c.search_runs([c.get_experiment_by_name(registry.EXPERIMENT).experiment_id])
    assert runs and runs[0].info.status == "FAILED"
    from autooptimizer.search import aliases

    with pytest.raises(NotFoundError, match="challenger"):
        aliases.require_alias("challenger")
    with pytest.raises(NotFoundError):
        train(ds, parent_version="v-missing")
    with pytest.raises(NotFoundError):
        registry.set_alias("gold", "v-missing")
    assert _registry_state() == before


def test_adapter_nan_is_a_clear_error() -> None:
    from autooptimizer.ml.ltr import AdapterConfig, train_adapter

    q = np.full((2, 4), np.nan, dtype=np.float32)
    with pytest.raises(InputError, match="Adapter loss"):
        train_adapter(q, np.ones((2, 3), dtype=np.float32), np.eye(3, 4, dtype=np.float32), AdapterConfig(), 0,
                      epochs=2)


def test_bi_encoder_trainer_runs_and_retunes_fusion(ml_world: dict, tmp_path: Path) -> None:
    from autooptimizer.ml.train import TrainConfig, train

    ds = _feedback_dataset(ml_world, tmp_path)
    res = train(ds, cfg=TrainConfig(trainer="bi_encoder", original="orig", max_steps=3, batch_size=4, eval_every=2,
                                    replay_pairs=2, max_seq_length=64), artifacts_dir=tmp_path / "art")
    spec = model_store.load(res.version)
    assert spec.kind == "bi_encoder" and spec.encoder_path == "weights"
    assert (Path(spec.resolved_encoder_path()) / "config.json").is_file()
    assert res.device == "cpu" and 1 <= res.steps <= 3 and res.samples_per_s and res.samples_per_s > 0
    assert res.report["replay_pairs"] == 2 and res.report["fusion_weight_by_dev"]
    assert res.report["stop_reason"] in ("max_steps", "early_stopping")
    assert (tmp_path / "art" / "checkpoints" / "best").is_dir()


def test_cross_encoder_trainer_uses_the_same_pipeline(ml_world: dict, tmp_path: Path) -> None:
    from autooptimizer.ml.train import TrainConfig, train

    ds = _feedback_dataset(ml_world, tmp_path)
    res = train(ds, cfg=TrainConfig(trainer="cross_encoder", original="orig", max_steps=2, batch_size=2,
                                    eval_every=1, hard_negatives=2, replay_pairs=0, max_seq_length=64))
    spec = model_store.load(res.version)
    assert spec.kind == "cross_encoder" and spec.parent == "v1-parent" and res.steps >= 1
    assert aliases.get_alias("challenger") == res.version and res.run_id


def test_tools_are_registered_with_catalog_risks() -> None:
    from autooptimizer.tools import load_all_tools
    from autooptimizer.tools.ml import SetModelAliasArgs, TrainRerankerArgs, _alias_facts, _train_facts

    reg = load_all_tools()
    want = {"build_dataset": ("data", "change"), "explain_reranker": ("data", "read"),
            "augment_dataset": ("data", "change"), "train_reranker": ("ml", "change"),
            "evaluate_model": ("ml", "read"), "register_model": ("ml", "change"),
            "delete_model": ("ml", "critical"), "set_model_alias": ("ml", "critical")}
    for name, (owner, risk) in want.items():
        spec = reg.get(name)
        assert (spec.owner, spec.risk) == (owner, risk)
    from autooptimizer.settings import get_settings
    from autooptimizer.tools.context import ToolContext

    ctx = ToolContext(env="dev", settings=get_settings(), trace_id="t")
    facts = _train_facts(TrainRerankerArgs(dataset="x", time_budget_s=100), ctx)
    assert facts["estimated_cost"] == pytest.approx(100 * 0.0005)
    assert _alias_facts(SetModelAliasArgs(alias="gold", version="v"), ctx)["target_is_gold"] is True
    assert _alias_facts(SetModelAliasArgs(alias="challenger", version="v"), ctx)["target_is_gold"] is False


def test_an_ltr_child_embeds_at_its_parents_truncation(ml_world: dict, tmp_path: Path) -> None:
    """A parent built at 32 tokens: the expert's features, reference and serving use the 32-token encoder, so the
    corpus is embedded once (no 256-token copy under AUTOOPT_HOME/embeddings); a version without the field is 256."""
    from autooptimizer.ml.train import TrainConfig, train
    from autooptimizer.search.beir import load_collection
    from autooptimizer.search.model_store import ModelSpec
    from autooptimizer.search.pipeline import SearchPipeline
    from autooptimizer.search.rerankers.ltr_fusion import LtrParams

    short = ModelSpec(version="v1-short", kind="bi_encoder", fusion_weight=0.6, rerank_depth=20,
                      params={"max_seq_length": 32})
    model_store.save(short)
    aliases.set_alias(aliases.CHAMPION, short.version)
    ds = _feedback_dataset(ml_world, tmp_path, short)
    res = train(ds, parent_version=short.version, cfg=TrainConfig(trainer="ltr", original="orig", depth=20))
    spec = model_store.load(res.version)
    assert spec.params["max_seq_length"] == 32
    pipe = SearchPipeline(spec, load_collection(["orig", "dom"])).warm(progress=False)
    assert pipe.reranker.encoder.identity == "minilm-base-msl32"  # type: ignore[attr-defined]
    assert pipe.search("heart failure")
    cached = {p.name for p in (get_settings().home / "embeddings").iterdir()}
    assert cached == {"minilm-base-msl32"}
    old = {k: v for k, v in spec.params.items() if k != "max_seq_length"}
    assert LtrParams.model_validate(old).max_seq_length == 256  # versions built before the field: 256


def test_training_leaves_no_scratch_behind(ml_world: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A loop that trains for months must not leak checkpoints or weight copies into the temp folder (each neural
    retrain left ~90 MB there), whether the run succeeds or fails."""
    import tempfile

    from autooptimizer.ml.train import TrainConfig, train

    ds = _feedback_dataset(ml_world, tmp_path)
    scratch = tmp_path / "tmpdir"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    neural = dict(original="orig", max_steps=2, batch_size=4, eval_every=1, replay_pairs=0, max_seq_length=64)
    train(ds, cfg=TrainConfig(trainer="bi_encoder", **neural))
    assert sorted(p.name for p in scratch.iterdir()) == []
    train(ds, cfg=TrainConfig(trainer="ltr", original="orig", depth=20))
    assert sorted(p.name for p in scratch.iterdir()) == []
    with pytest.raises(InputError, match="loss became nan"):
        train(ds, cfg=TrainConfig(trainer="bi_encoder", **neural), on_loss=lambda step, loss: loss * float("nan"))
    assert sorted(p.name for p in scratch.iterdir()) == []


@pytest.mark.parametrize("where", ["log_metrics", "save", "register_model"])
def test_a_failure_after_training_fails_the_run_and_stores_nothing(ml_world: dict, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """A full disk in model_store.save (or an MLflow error while logging or registering) is a failed training: the
    MLflow run ends FAILED, not RUNNING forever, and no orphan version is left in the model store."""
    import tempfile

    from autooptimizer.ml import model_registry as registry
    from autooptimizer.ml.train import TrainConfig, train

    ds = _feedback_dataset(ml_world, tmp_path)
    scratch = tmp_path / "tmpdir"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    before = _registry_state()

    def boom(*_a: object, **_k: object) -> None:
        raise OSError(28, "No space left on device")

    target = model_store if where == "save" else registry
    real = getattr(target, where)
    monkeypatch.setattr(target, where, boom)
    with pytest.raises(OSError, match="No space left"):
        train(ds, cfg=TrainConfig(trainer="ltr", original="orig", depth=20))
    monkeypatch.setattr(target, where, real)
    assert _registry_state() == before, "nothing stored, registered or aliased"
    c = registry.client()
    runs = c.search_runs([c.get_experiment_by_name(registry.EXPERIMENT).experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]
    assert sorted(p.name for p in scratch.iterdir()) == []


def test_a_reused_artifacts_dir_keeps_only_this_runs_checkpoint(ml_world: dict, tmp_path: Path) -> None:
    """`autoopt train --artifacts-dir art` run twice keeps each run's best checkpoint in art/checkpoints/best; the
    second run's stored weights hold its own files only, never the first run's leftovers (a bi-encoder's pooling
    modules copied into a cross-encoder's weights)."""
    from autooptimizer.ml.train import TrainConfig, train

    ds = _feedback_dataset(ml_world, tmp_path)
    neural = dict(original="orig", max_steps=2, batch_size=4, eval_every=1, replay_pairs=0, max_seq_length=64)
    train(ds, cfg=TrainConfig(trainer="bi_encoder", **neural), artifacts_dir=tmp_path / "art")
    assert (tmp_path / "art" / "checkpoints" / "best" / "1_Pooling").is_dir()
    res = train(ds, cfg=TrainConfig(trainer="cross_encoder", **neural), artifacts_dir=tmp_path / "art")
    stored = sorted(p.name for p in Path(model_store.load(res.version).resolved_encoder_path()).iterdir())
    kept = sorted(p.name for p in (tmp_path / "art" / "checkpoints" / "best").iterdir())
    assert "model.safetensors" in stored and not {"1_Pooling", "2_Normalize"} & set(stored)
    assert kept == stored


def test_neural_pseudo_queries_join_training_and_are_recorded(ml_world: dict, tmp_path: Path) -> None:
    """Corpus pseudo-queries (GPL-style adaptation, issue 18) feed the bi-encoder and are recorded in the params."""
    from autooptimizer.ml.adapt import Adaptation, pseudo_queries
    from autooptimizer.ml.evaluate import load_split
    from autooptimizer.ml.train import TrainConfig, train

    ds = _feedback_dataset(ml_world, tmp_path)
    base = {"trainer": "bi_encoder", "original": "orig", "max_steps": 2, "batch_size": 4, "eval_every": 2,
            "replay_pairs": 0, "max_seq_length": 32}
    plain = train(ds, cfg=TrainConfig(**base))
    assert "adaptation" not in model_store.load(plain.version).params and plain.report["pseudo_queries"] is None
    ad = Adaptation(pseudo_queries=6, pseudo_kind="crop")
    res = train(ds, cfg=TrainConfig(**base, adaptation=ad))
    collection = load_split(ml_world["data"] / "dom")[0]
    expected = pseudo_queries(collection.doc_ids, collection.text, 6, 0, "crop")
    assert expected  # the tiny corpus has documents long enough to crop
    made = res.report["pseudo_queries"]
    assert made["made"] == len(expected) and made["examples"] == [q for _, q in expected[:3]]
    assert model_store.load(res.version).params["adaptation"] == {"pseudo_queries": 6, "pseudo_kind": "crop",
                                                                  "made": len(expected)}
    assert res.version != plain.version  # the adaptation is part of the version's identity


@pytest.mark.parametrize(("trainer", "adaptation", "needle"), [
    ("bi_encoder", {"bm25_tune": True}, "bm25_tune"),
    ("cross_encoder", {"prior": {"rm3": 0.2}}, "prior"),
    ("bi_encoder", {"unjudged": True, "rm3_idf": True}, "rm3_idf"),
    ("cross_encoder", {"pseudo_queries": 10, "pseudo_kind": "terms"}, "terms"),
])
def test_a_neural_trainer_refuses_adaptations_it_cannot_honour(trainer: str, adaptation: dict, needle: str) -> None:
    from pydantic import ValidationError

    from autooptimizer.ml.train import TrainConfig

    with pytest.raises(ValidationError, match=needle):
        TrainConfig.model_validate({"trainer": trainer, "adaptation": adaptation})
    TrainConfig.model_validate({"trainer": "ltr", "adaptation": adaptation})  # the ltr trainer takes each of them


def test_pseudo_queries_asked_but_none_cut_are_reported_and_training_runs(ml_world: dict, tmp_path: Path) -> None:
    """The tiny corpus' documents are one sentence each, so ICT cuts none: the report must say 0 of 5 were made
    (it said None, as if none had been asked for), the params agree, and training still runs."""
    from autooptimizer.ml.adapt import Adaptation
    from autooptimizer.ml.train import TrainConfig, train

    ds = _feedback_dataset(ml_world, tmp_path)
    res = train(ds, cfg=TrainConfig(trainer="bi_encoder", original="orig", max_steps=2, batch_size=4, eval_every=2,
                                    replay_pairs=0, max_seq_length=32,
                                    adaptation=Adaptation(pseudo_queries=5, pseudo_kind="ict")))
    assert res.report["pseudo_queries"] == {"asked": 5, "made": 0, "kind": "ict", "examples": []}
    assert model_store.load(res.version).params["adaptation"] == {"pseudo_queries": 5, "pseudo_kind": "ict",
                                                                  "made": 0}
    assert res.report["steps"] == 2


@pytest.mark.parametrize(("args", "needle"), [
    ({"adaptation": "PQ_CROP2000"}, "Unknown adaptation 'PQ_CROP2000'"),
    ({"trainer": "bi_encoder", "adaptation": "bm25"}, "ltr trainer only"),
    ({"trainer": "cross_encoder", "adaptation": "dense50"}, "['dense_candidates'] applies to the ltr trainer only"),
    ({"trainer": "cross_encoder", "adaptation": "pq_terms"}, "pseudo_kind 'terms'"),
])
def test_the_train_tool_refuses_a_bad_adaptation_before_the_pdp(args: dict, needle: str) -> None:
    """A bad adaptation is refused with the arguments (nothing ran, no approval asked), not after a permit."""
    from autooptimizer.tools.registry import load_all_tools

    res = load_all_tools().call("ml", "train_reranker", {"dataset": "x", **args}, env="dev")
    assert (res.decision, res.policies, res.executed) == ("deny", ["registry.invalid-args"], False)
    assert needle in (res.error or "")
