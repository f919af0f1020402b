"""MLflow model registry mirror: where a registered version's files live (the model folder, or an uploaded copy)."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.weights import weights_folder

from autooptimizer.infra.net import free_port
from autooptimizer.ml import model_registry as registry
from autooptimizer.search import model_store
from autooptimizer.search.model_store import ModelSpec
from autooptimizer.settings import get_settings


def _stored(version: str, tmp_path: Path) -> Path:
    weights = weights_folder(tmp_path / f"w-{version}", {"experts/x.npz": b"x" * 300})
    model_store.save(ModelSpec(version=version, kind="bm25"), weights_dir=weights)
    return model_store.version_dir(version)


def test_a_local_registry_registers_the_model_folder_itself(tmp_path: Path) -> None:
    folder = _stored("v-local", tmp_path)
    mv = registry.register_model("v-local")
    c = registry.client()
    assert c.get_model_version(registry.REGISTERED_MODEL, mv.mlflow_version).source == folder.resolve().as_uri()
    assert not c.list_artifacts(mv.run_id or "", "model"), "nothing copied into the run's artifacts"


@pytest.mark.parametrize(("uri", "direct"), [
    ("sqlite:////h/mlflow/mlflow.db", True), ("postgresql+psycopg2://u@db/mlflow", True), ("file:///h/mlruns", True),
    ("/h/mlruns", True), ("http://127.0.0.1:5000", False), ("https://mlflow.example.org", False),
    ("databricks", False)])
def test_only_a_store_the_client_writes_itself_takes_the_model_folder_as_source(uri: str, direct: bool) -> None:
    """A tracking server validates a version's source and refuses a local path outside the run's artifacts."""
    assert registry.writes_registry_directly(uri) is direct


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    """A real MLflow tracking server (sqlite backend) on a free loopback port; stopped after."""
    port = free_port()
    exe = Path(sys.executable).with_name("mlflow")
    log = (tmp_path / "mlflow-server.log").open("w")
    proc = subprocess.Popen([str(exe), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                             "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
                             "--default-artifact-root", str(tmp_path / "server-artifacts")],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):  # startup only; the test asserts nothing about time
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited: {(tmp_path / 'mlflow-server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()


@pytest.mark.slow
def test_a_tracking_server_gets_the_folder_uploaded_and_accepts_the_version(
        mlflow_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server refuses a local model-folder source ('Invalid model version source'): the upload path is taken."""
    monkeypatch.setenv("AUTOOPT_MLFLOW_URI", mlflow_server)
    get_settings.cache_clear()
    _stored("v-remote", tmp_path)
    mv = registry.register_model("v-remote")
    c = registry.client()
    run = c.get_run(mv.run_id or "")
    assert c.get_model_version(registry.REGISTERED_MODEL, mv.mlflow_version).source == f"{run.info.artifact_uri}/model"
    assert {a.path for a in c.list_artifacts(run.info.run_id, "model/weights/experts")} == {
        "model/weights/experts/x.npz"}
    assert registry.delete_model("v-remote")["mlflow_version"] == mv.mlflow_version


def test_ensure_store_builds_the_schema_experiment_and_model_once_and_again_is_harmless() -> None:
    import sqlite3

    from autooptimizer.ml import model_registry

    model_registry.ensure_store()
    model_registry.ensure_store()
    db = get_settings().home / "mlflow" / "mlflow.db"
    tables = {r[0] for r in sqlite3.connect(db).execute("select name from sqlite_master where type='table'")}
    assert {"experiments", "metrics", "registered_models", "model_versions", "alembic_version"} <= tables
    c = model_registry.client()
    assert c.get_experiment_by_name(model_registry.EXPERIMENT) is not None
    assert c.get_registered_model(model_registry.REGISTERED_MODEL).name == model_registry.REGISTERED_MODEL


class _LateReader:
    """A real MLflow client that, like a second process, read "no such object" just before another created it."""

    def __init__(self, client) -> None:  # noqa: ANN001
        self._c, self._stale = client, {"experiment": True, "model": True}

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self._c, name)

    def get_experiment_by_name(self, name: str):  # noqa: ANN201
        if self._stale.pop("experiment", False):
            return None
        return self._c.get_experiment_by_name(name)

    def get_registered_model(self, name: str):  # noqa: ANN201
        if self._stale.pop("model", False):
            raise RuntimeError("not found (stale read)")
        return self._c.get_registered_model(name)


def test_a_lost_creation_race_reads_the_winners_experiment_and_model() -> None:
    """Two repair workers of a fresh home both found no experiment and both created it: the loser failed with
    `UNIQUE constraint failed: experiments.workspace, experiments.name` (seen in a parallel sweep test)."""
    from autooptimizer.ml import model_registry

    c = model_registry.client()
    exp_id = model_registry._experiment_id(c)  # the winner
    model_registry._registered_model(c)
    late = _LateReader(c)
    assert model_registry._experiment_id(late) == exp_id  # its create fails; it reads the winner's
    model_registry._registered_model(late)  # likewise: no error
    assert late._stale == {}  # both stale reads happened


def test_a_creation_that_fails_for_another_reason_is_not_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    from autooptimizer.ml import model_registry

    c = model_registry.client()

    def broken(*_a, **_k):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("database is locked")

    monkeypatch.setattr(c, "create_experiment", broken)
    with pytest.raises(RuntimeError, match="database is locked"):
        model_registry._experiment_id(c)

