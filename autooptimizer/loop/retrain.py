"""The retrain half of an NDCG cycle: the data agent's and the ML agent's tools, in order, each a gated registry call.

    explain_reranker -> diagnostic_report.json      build_dataset -> dataset_manifest.yaml
    augment_dataset -> augmented_dataset.csv        train_reranker -> challenger + MLflow run id
    evaluate_model -> the offline promotion rule     register_model -> MLflow version, alias `challenger`

The tools belong to the ML area (autooptimizer/tools/data.py, ml.py); this module only sequences them. Each call
gets the arguments its args model declares, picked from what the cycle knows so far (artifacts dir, domain data,
champion, the previous steps' outputs), so the loop does not duplicate the tools' schemas.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from autooptimizer.errors import AutoOptError

STEPS: tuple[tuple[str, str, str], ...] = (
    ("diagnose", "data", "explain_reranker"),
    ("dataset", "data", "build_dataset"),
    ("augment", "data", "augment_dataset"),
    ("train", "ml", "train_reranker"),
    ("evaluate", "ml", "evaluate_model"),
    ("register", "ml", "register_model"),
)
_ARTIFACTS = {"diagnose": "diagnostic_report.json", "dataset": "dataset_manifest.yaml",
              "augment": "augmented_dataset.csv"}


def _find(obj: Any, *keys: str) -> Any:
    """First value under any of `keys`, searched depth-first through nested dicts."""
    if isinstance(obj, dict):
        for k in keys:
            if k in obj and obj[k] not in (None, ""):
                return obj[k]
        for v in obj.values():
            found = _find(v, *keys)
            if found not in (None, ""):
                return found
    return None


def _args_for(registry: Any, tool: str, known: dict[str, Any]) -> dict[str, Any]:
    fields = registry.get(tool).args_model.model_fields
    return {name: known[name] for name in fields if name in known and known[name] is not None}


def run_retrain(runner: Any, cid: str, opts: Any, state: dict[str, Any], *, champion: str,
                artifacts: Path) -> dict[str, Any]:
    """Run the six steps; returns {model_version, promotable, reason, mlflow_run_id}."""
    artifacts.mkdir(parents=True, exist_ok=True)
    known: dict[str, Any] = {
        "artifacts_dir": str(artifacts), "out_dir": str(artifacts), "output_dir": str(artifacts),
        "domain_data": opts.domain_data, "data": opts.domain_data, "dataset_dir": opts.domain_data,
        "model": champion, "model_version": champion, "champion": champion, "base_model": champion,
        "seed": opts.seed, "env": runner.settings.env, "cycle_id": cid,
    }
    outputs: dict[str, Any] = {}
    for step, agent, tool in STEPS:
        args = _args_for(runner.registry, tool, known)
        out = runner.step(cid, step, lambda a=agent, t=tool, x=args: runner.tool(state, a, t, x,
                                                                                evidence={"cycle_id": cid}))
        outputs[step] = out
        _learn(step, out, known, champion)
        if step in _ARTIFACTS and not (artifacts / _ARTIFACTS[step]).exists():
            src = _find(out, "path", "report_path", "manifest_path", "csv_path")
            if src and Path(str(src)).is_file():
                (artifacts / _ARTIFACTS[step]).write_bytes(Path(str(src)).read_bytes())
    challenger = known.get("challenger")
    if not challenger:
        raise AutoOptError("Training returned no challenger model version.", "Check the train_reranker result.")
    run_id = known.get("mlflow_run_id")
    if run_id:
        (artifacts / "mlflow_run_id.txt").write_text(f"{run_id}\n")
    evaluation = outputs.get("evaluate") or {}
    promotable = bool(_find(evaluation, "promotable", "passed", "promote"))
    (artifacts / "evaluation.json").write_text(json.dumps(evaluation, indent=2, default=str))
    return {"model_version": challenger, "promotable": promotable, "mlflow_run_id": run_id,
            "reason": _find(evaluation, "reason", "reasons") or "", "evaluation": evaluation}


def _learn(step: str, out: Any, known: dict[str, Any], champion: str) -> None:
    """Carry each step's outputs into the next steps' arguments."""
    if step == "dataset":
        for key in ("dataset_hash", "dataset_id", "dataset", "dataset_path", "manifest_path"):
            value = _find(out, key)
            if value is not None:
                known[key] = value
    elif step == "augment":
        for key in ("augmented_path", "augmented_dataset", "csv_path"):
            value = _find(out, key)
            if value is not None:
                known[key] = value
    elif step == "train":
        challenger = _find(out, "model_version", "version", "challenger")
        if challenger and challenger != champion:
            known["challenger"] = challenger
            known["model_version"] = challenger
            known["candidate"] = challenger
        run_id = _find(out, "mlflow_run_id", "run_id")
        if run_id:
            known["mlflow_run_id"] = run_id
            known["run_id"] = run_id
