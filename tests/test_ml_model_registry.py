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
