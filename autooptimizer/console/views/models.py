"""The model registry: stored versions with their aliases (champion, challenger, gold), parent -> child lineage, the
dataset each was trained on (its manifest), offline scores per domain, what GitOps asks to serve and what the
search service serves (stable and canary), and the MLflow registry's version numbers.

Sources: `search.model_store` (AUTOOPT_HOME/models), `search.aliases` (aliases.json, what the service reads),
`ml.model_registry` (MLflow, read only when its store exists: importing MLflow costs seconds), the cycles'
`evaluation.json` (offline NDCG@10 per domain), each version's `bootstrap.json` / `train_report.json`, the datasets'
`dataset_manifest.yaml`, the GitOps HEAD and the service's `GET /admin/state`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field

from autooptimizer.console.views.gitops import DesiredState, desired_state
from autooptimizer.settings import Settings


class ModelRow(BaseModel):
    version: str
    kind: str
    parent: str | None
    created_at: str
    notes: str
    aliases: list[str] = Field(default_factory=list)
    children: list[str] = Field(default_factory=list)
    depth: int = 0
    dataset: str | None = None
    manifest: dict[str, Any] | None = None
    scores: dict[str, float] = Field(default_factory=dict, description="domain -> offline NDCG@10")
    roles: list[str] = Field(default_factory=list, description="serving | canary (desired and served)")
    mlflow_version: str | None = None


class ModelsView(BaseModel):
    rows: list[ModelRow]
    aliases: dict[str, str]
    desired: DesiredState
    served: dict[str, Any] | None = None
    served_error: str | None = None
    mlflow_error: str | None = None


def _scores(settings: Settings) -> dict[str, dict[str, float]]:
    """version -> {domain: NDCG@10} from every cycle's evaluation.json (later cycles win)."""
    out: dict[str, dict[str, float]] = {}
    for path in sorted((settings.home / "artifacts").glob("*/evaluation.json")):
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        domain = Path(str((raw.get("holdout") or {}).get("folder", "new"))).name + " holdout"
        for role in ("champion", "challenger", "gold"):
            side = raw.get(role)
            if isinstance(side, dict) and isinstance(side.get("version"), str):
                got = out.setdefault(side["version"], {})
                for key, name in (("new_domain_ndcg@10", domain), ("original_ndcg@10", str(raw.get("original")))):
                    if isinstance(side.get(key), int | float):
                        got[name] = float(side[key])
    return out


def _lineage(rows: list[ModelRow]) -> list[ModelRow]:
    """Rows in tree order (each parent followed by its children), with depth for indentation."""
    by = {r.version: r for r in rows}
    for r in rows:
        if r.parent in by:
            by[r.parent].children.append(r.version)
    ordered: list[ModelRow] = []

    def walk(row: ModelRow, depth: int) -> None:
        row.depth = depth
        ordered.append(row)
        for child in row.children:
            walk(by[child], depth + 1)

    for r in rows:
        if r.parent not in by:
            walk(r, 0)
    return ordered


def _dataset(settings: Settings, version: str) -> tuple[str | None, dict[str, Any] | None, dict[str, float]]:
    """(dataset hash or name, its manifest, scores the version's own report holds)."""
    from autooptimizer.search import model_store

    boot = model_store.read_extra(version, "bootstrap.json")
    if isinstance(boot, dict):
        name = str(boot.get("dataset", "")) or None
        score = boot.get("test_ndcg10")
        return name, None, ({f"{name} test": float(score)} if name and isinstance(score, int | float) else {})
    spec = model_store.load(version)
    ref = spec.params.get("dataset") if isinstance(spec.params.get("dataset"), str) else None
    report = model_store.read_extra(version, "train_report.json")
    if ref is None and isinstance(report, dict) and isinstance(report.get("dataset"), str):
        ref = report["dataset"]
    if ref is None:
        import re

        found = re.search(r"dataset ([0-9a-f]{8,64})", spec.notes)
        ref = found.group(1) if found else None
    manifest = None
    if ref:
        path = settings.home / "datasets" / ref / "dataset_manifest.yaml"
        if path.is_file():
            loaded = yaml.safe_load(path.read_text())
            manifest = loaded if isinstance(loaded, dict) else None
    return ref, manifest, {}


def _mlflow(settings: Settings) -> tuple[dict[str, str], str | None]:
    """model version -> MLflow registry version, when the MLflow store exists."""
    from autooptimizer.settings import mlflow_uri

    if not settings.mlflow_tracking_uri and not (settings.home / "mlflow" / "mlflow.db").is_file():
        return {}, None
    try:
        from autooptimizer.ml import model_registry

        client = model_registry.client()
        found = client.search_model_versions(f"name='{model_registry.REGISTERED_MODEL}'")
        return {mv.tags.get("autoopt_version", ""): str(mv.version) for mv in found}, None
    except Exception as exc:  # noqa: BLE001 - a registry that cannot be read is shown, not fatal
        return {}, f"MLflow registry at {mlflow_uri(settings)} unreadable: {type(exc).__name__}: {str(exc)[:200]}"


def _served(settings: Settings) -> tuple[dict[str, Any] | None, str | None]:
    from autooptimizer.errors import AutoOptError
    from autooptimizer.loop.deployer import LocalDeployer, get_deployer

    deployer = get_deployer(settings) if settings.argocd_url else LocalDeployer(settings.search_url, timeout=3.0,
                                                                                token=settings.api_token)
    try:
        return deployer.state().model_dump(), None
    except AutoOptError as exc:
        return None, exc.problem
    except Exception as exc:  # noqa: BLE001 - an unreachable target is shown, not fatal
        return None, f"{type(exc).__name__}: {str(exc)[:200]}"


def read_models(settings: Settings) -> ModelsView:
    from autooptimizer.search import aliases, model_store

    names = aliases.all_aliases()
    desired = desired_state(settings)
    served, served_error = _served(settings)
    mlflow, mlflow_error = _mlflow(settings)
    scores = _scores(settings)
    rows = []
    for version in model_store.list_versions():
        spec = model_store.load(version)
        dataset, manifest, own = _dataset(settings, version)
        roles = []
        patch = desired.patch or {}
        canary = patch.get("canary") if isinstance(patch.get("canary"), dict) else {}
        if patch.get("modelVersion") == version:
            roles.append("serving (desired)")
        if isinstance(canary, dict) and canary.get("modelVersion") == version and canary.get("weight"):
            roles.append(f"canary {canary.get('weight')} (desired)")
        if served and served.get("stable") == version:
            roles.append("serving (service)")
        if served and served.get("canary") == version:
            roles.append(f"canary {served.get('canary_weight')} (service)")
        rows.append(ModelRow(version=version, kind=spec.kind, parent=spec.parent, created_at=spec.created_at,
                             notes=spec.notes, aliases=sorted(a for a, v in names.items() if v == version),
                             dataset=dataset, manifest=manifest, scores={**own, **scores.get(version, {})},
                             roles=roles, mlflow_version=mlflow.get(version)))
    return ModelsView(rows=_lineage(rows), aliases=names, desired=desired, served=served, served_error=served_error,
                      mlflow_error=mlflow_error)
