"""Every test gets its own AUTOOPT_HOME and the offline environment; nothing touches the network."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from autooptimizer.settings import OFFLINE_ENV, get_settings

for _k, _v in OFFLINE_ENV.items():
    os.environ.setdefault(_k, _v)
os.environ["LANGSMITH_TRACING"] = "false"


@pytest.fixture(autouse=True)
def autoopt_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key in [k for k in os.environ if k.startswith("AUTOOPT_") and k != "AUTOOPT_DATA_DIR"]:
        monkeypatch.delenv(key)  # a setting left behind by another test must not leak into this one
    home = tmp_path / "autoopt-home"
    monkeypatch.setenv("AUTOOPT_HOME", str(home))
    monkeypatch.setenv("CREWAI_STORAGE_DIR", str(tmp_path / "crewai"))
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()


@pytest.fixture
def policy_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An editable copy of the packaged policies, active through AUTOOPT_POLICY_DIR (for tests that break or
    change a policy file)."""
    from autooptimizer.policies.catalog import PACKAGE_DIR
    from autooptimizer.policies.pdp import reload_policies

    dst = tmp_path / "policies"
    dst.mkdir()
    shutil.copy(PACKAGE_DIR / "catalog.yaml", dst / "catalog.yaml")
    shutil.copytree(PACKAGE_DIR / "cedar", dst / "cedar")
    monkeypatch.setenv("AUTOOPT_POLICY_DIR", str(dst))
    reload_policies()
    yield dst
    reload_policies()
