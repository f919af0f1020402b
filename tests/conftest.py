"""Every test gets its own AUTOOPT_HOME and the offline environment; nothing touches the network."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


@pytest.fixture
def ml_world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Tiny original (`orig`) and new (`dom`) domains under AUTOOPT_DATA_DIR and a bi-encoder parent that is
    champion and gold: the starting point of the ML and repair tests."""
    from autooptimizer.search import aliases, model_store
    from autooptimizer.search.model_store import ModelSpec
    from autooptimizer.search.sample_data import write_tiny_domain, write_tiny_original

    data = tmp_path / "data"
    write_tiny_original(data / "orig")
    write_tiny_domain(data / "dom")
    monkeypatch.setenv("AUTOOPT_DATA_DIR", str(data))
    monkeypatch.setenv("AUTOOPT_THREADS", "1")
    get_settings.cache_clear()
    parent = ModelSpec(version="v1-parent", kind="bi_encoder", fusion_weight=0.6, rerank_depth=20)
    model_store.save(parent)
    aliases.set_alias(aliases.CHAMPION, parent.version)
    aliases.set_alias(aliases.GOLD, parent.version)
    return {"data": data, "parent": parent}


@pytest.fixture
def tiny_service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A tiny real search service serving version `v-a` (made here) on AUTOOPT_SEARCH_PORT, and no Prometheus
    (its URL refuses, so gates read unknown): the start of the loop tests that run real cycles. Stopped after."""
    from support.tiny_stack import start_tiny_service

    svc = start_tiny_service(tmp_path, monkeypatch, ["v-a"])
    yield svc
    svc.stop()
