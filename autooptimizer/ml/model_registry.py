"""MLflow tracking and model registry (sqlite under AUTOOPT_HOME by default, a tracking server when configured).

Every stored model version (AUTOOPT_HOME/models/<version>) can be registered as a version of the registered model
`autoopt-reranker`, tagged with its AutoOptimizer version id. Aliases `champion`, `challenger` and `gold` are kept in
both places: `search/aliases.py` (what the service reads) and the MLflow registry (what people browse). The file is
written first; MLflow mirrors it.

With a local artifact store (the embedded default) a registered version's source is its model-store folder itself:
copying it into MLflow's artifacts would store every model twice. Retention deletes the registry entry with the
folder (`delete_model`), so the source never dangles. A remote store (a tracking server) gets the folder uploaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from autooptimizer.errors import AutoOptError, InputError, NotFoundError

REGISTERED_MODEL = "autoopt-reranker"
EXPERIMENT = "autoopt-ml"
ALIASES = ("champion", "challenger", "gold")


class RegisteredVersion(BaseModel):
    name: str
    mlflow_version: str
    model_version: str
    run_id: str | None
    aliases: list[str]


class RegistryMirrorError(AutoOptError):
    """aliases.json changed, but the MLflow registry that mirrors it could not be written."""


def client():
    """An MlflowClient on the configured tracking URI (quiet, offline)."""
    import logging

    import mlflow
    from mlflow import MlflowClient

    from autooptimizer.settings import apply_offline_env, get_settings, mlflow_uri

    apply_offline_env()
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    uri = mlflow_uri(get_settings())
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def ensure_store() -> None:
    """Create (or migrate) the tracking and registry stores, the experiment and the registered model now. MLflow
    builds a new sqlite store's schema on first use, and two processes doing that at once collide (`duplicate column
    name: step`), as two creating the experiment do (`UNIQUE constraint failed`): call this once before starting
    processes that will all use the store."""
    c = client()
    _experiment_id(c)
    _registered_model(c)


def _experiment_id(c) -> str:
    """The experiment's id, created when missing; a process that lost the race to create it reads the winner's."""
    exp = c.get_experiment_by_name(EXPERIMENT)
    if exp is not None:
        return exp.experiment_id
    from autooptimizer.settings import get_settings

    artifacts = get_settings().path("mlflow", "artifacts", "x").parent  # never ./mlruns in the working dir
    artifacts.mkdir(parents=True, exist_ok=True)
    try:
        return c.create_experiment(EXPERIMENT, artifact_location=artifacts.as_uri())
    except Exception:
        exp = c.get_experiment_by_name(EXPERIMENT)
        if exp is None:
            raise
        return exp.experiment_id


def _registered_model(c) -> None:
    """The registered model, created when missing (a lost creation race reads the winner's, as `_experiment_id`)."""
    try:
        c.get_registered_model(REGISTERED_MODEL)
        return
    except Exception:  # noqa: BLE001 - not registered yet
        pass
    try:
        c.create_registered_model(REGISTERED_MODEL, description="AutoOptimizer reranker versions")
    except Exception:
        c.get_registered_model(REGISTERED_MODEL)  # raises the real problem when it is not a lost race


def start_run(run_name: str, params: dict[str, Any], tags: dict[str, str] | None = None) -> str:
    """Create a run in the experiment, log params; returns the run id (the caller logs metrics and ends it)."""
    c = client()
    run = c.create_run(_experiment_id(c), run_name=run_name, tags=tags or {})
    for k, v in params.items():
        c.log_param(run.info.run_id, k, str(v)[:500])
    return run.info.run_id


def log_metrics(run_id: str, metrics: dict[str, float], step: int | None = None) -> None:
    c = client()
    for k, v in metrics.items():
        if v is not None:
            c.log_metric(run_id, k.replace("@", "_at_"), float(v), step=step or 0)


def end_run(run_id: str, status: str = "FINISHED") -> None:
    client().set_terminated(run_id, status=status)


def _find(c, model_version: str):
    try:
        found = c.search_model_versions(f"name='{REGISTERED_MODEL}' and tag.autoopt_version='{model_version}'")
    except Exception:  # noqa: BLE001 - no registered model yet
        return None
    return found[0] if found else None


def is_registered(model_version: str) -> bool:
    """Whether the registry holds `model_version` (False also when no model is registered yet)."""
    return _find(client(), model_version) is not None


def register_model(model_version: str, run_id: str | None = None) -> RegisteredVersion:
    """Register a stored model version (source: its folder, or an uploaded copy on a remote store). Idempotent."""
    from autooptimizer.search import model_store

    if not model_store.exists(model_version):
        raise NotFoundError(f"Model version {model_version!r} is not stored.", "Train or bootstrap it first.")
    c = client()
    found = _find(c, model_version)
    if found is not None:
        return _describe(c, found)
    if run_id is None:
        run_id = start_run(f"register-{model_version}", {"model_version": model_version})
        end_run(run_id)
    source = _model_source(c, run_id, model_store.version_dir(model_version))
    _registered_model(c)
    mv = c.create_model_version(REGISTERED_MODEL, source=source, run_id=run_id,
                                tags={"autoopt_version": model_version})
    return _describe(c, c.get_model_version(REGISTERED_MODEL, mv.version))


def _model_source(c, run_id: str, folder: Path) -> str:
    """Where the registered version's files live: the model-store folder when the client writes the registry itself
    and the run's artifacts are on this machine (file: URI), else the folder uploaded as the run's `model` artifact."""
    from autooptimizer.settings import get_settings, mlflow_uri

    artifact_uri = c.get_run(run_id).info.artifact_uri or ""
    if artifact_uri.startswith("file:") and writes_registry_directly(mlflow_uri(get_settings())):
        return folder.resolve().as_uri()
    c.log_artifacts(run_id, str(folder), artifact_path="model")
    return f"{artifact_uri}/model"


def writes_registry_directly(tracking_uri: str) -> bool:
    """True for a store the client writes itself (a local folder or a database). A tracking server (http, https,
    databricks) validates a new version's source and refuses a local path outside the run's artifact folder
    (mlflow.server.handlers._validate_source_run: 'Invalid model version source'), so it gets an upload."""
    from urllib.parse import urlparse

    from mlflow.store.db.db_types import DATABASE_ENGINES

    scheme = urlparse(tracking_uri).scheme.split("+")[0]
    return scheme in DATABASE_ENGINES or (scheme in ("", "file") and tracking_uri != "databricks")  # a profile


def _describe(c, mv) -> RegisteredVersion:
    full = c.get_model_version(REGISTERED_MODEL, mv.version)  # search results leave aliases empty
    return RegisteredVersion(name=REGISTERED_MODEL, mlflow_version=str(full.version),
                             model_version=full.tags.get("autoopt_version", ""), run_id=full.run_id,
                             aliases=list(full.aliases))


def set_alias(alias: str, model_version: str) -> RegisteredVersion:
    """Point `alias` at `model_version` in aliases.json and in the MLflow registry (registering it if needed)."""
    from autooptimizer.search import aliases, model_store

    if alias not in ALIASES:
        raise InputError(f"Alias {alias!r} is not managed here.", f"Use one of {', '.join(ALIASES)}.")
    if not model_store.exists(model_version):
        raise NotFoundError(f"Model version {model_version!r} is not stored.", "Pass a stored version id.")
    aliases.set_alias(alias, model_version)  # the source of truth moves first: the service and git checks read it
    try:
        sync_bootstrap_aliases()  # the mirror catches up on every alias, healing any earlier failure
        return register_model(model_version)
    except Exception as exc:  # noqa: BLE001 - MLflow down or its store locked
        raise RegistryMirrorError(
            f"{alias} now points at {model_version} in aliases.json, but the MLflow registry could not be updated "
            f"({type(exc).__name__}: {str(exc)[:200]}).",
            "Nothing else is needed for serving; the MLflow mirror catches up on the next alias change.") from exc


def sync_bootstrap_aliases() -> dict[str, str]:
    """Mirror aliases.json (e.g. bootstrap's champion = gold) into MLflow; returns the aliases mirrored."""
    from autooptimizer.search import aliases

    c = client()
    out = {}
    for alias, version in aliases.all_aliases().items():
        if alias in ALIASES:
            reg = register_model(version)
            c.set_registered_model_alias(REGISTERED_MODEL, alias, reg.mlflow_version)
            out[alias] = version
    return out


def delete_model(model_version: str, *, keep_lineage: bool = True) -> dict[str, Any]:
    """Delete a stored version and its registry entry. Refused while any alias points at it or a stored version
    falls back to it (an ltr_fusion parent). `keep_lineage=False` (retention) refuses only a version another one
    needs to serve (`model_store.runtime_dependencies`), so an old champion in a chain of repairs can go."""
    import shutil

    from autooptimizer.search import aliases, model_store

    if not model_store.exists(model_version):
        raise NotFoundError(f"Model version {model_version!r} is not stored.", "Nothing to delete.")
    held = [a for a, v in aliases.all_aliases().items() if v == model_version]
    if held:
        raise InputError(f"Model version {model_version!r} holds alias(es) {held}.",
                         "Move those aliases to another version first.")
    children = [v for v in model_store.list_versions() if v != model_version and (
        model_store.load(v).parent == model_version if keep_lineage
        else model_version in model_store.runtime_dependencies(model_store.load(v)))]
    if children:
        raise InputError(f"Model version {model_version!r} is the parent of {children}.",
                         "Delete the child versions first; they fall back to this one.")
    c = client()
    found = _find(c, model_version)
    if found is not None:
        c.delete_model_version(REGISTERED_MODEL, found.version)
    shutil.rmtree(model_store.version_dir(model_version))
    return {"deleted": model_version, "mlflow_version": found.version if found is not None else None}
