"""Settings: AUTOOPT_HOME/AUTOOPT_DATA_DIR resolution and errors that name the setting."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from autooptimizer.errors import ConfigError
from autooptimizer.settings import get_settings, load_settings, mlflow_uri


def test_home_comes_from_env_and_paths_live_under_it(autoopt_home: Path) -> None:
    s = get_settings()
    assert s.home == autoopt_home.resolve()
    p = s.path("models", "v1", "model.json")
    assert p.parent.is_dir() and autoopt_home in p.parents
    assert mlflow_uri(s) == f"sqlite:///{autoopt_home.resolve() / 'mlflow' / 'mlflow.db'}"


def test_bad_environment_name_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOOPT_ENV", "qa")
    with pytest.raises(ConfigError, match="AUTOOPT_ENV"):
        load_settings()


def test_non_integer_port_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOOPT_SEARCH_PORT", "eighty")
    with pytest.raises(ConfigError, match="AUTOOPT_SEARCH_PORT"):
        load_settings()


def test_missing_data_dir_names_the_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AUTOOPT_DATA_DIR", str(tmp_path / "nowhere"))
    s = load_settings()
    with pytest.raises(ConfigError, match="AUTOOPT_DATA_DIR"):
        s.require_data_dir()
    with pytest.raises(ConfigError, match="AUTOOPT_DATA_DIR"):
        s.dataset("cran")


def test_dataset_resolves_name_under_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "mini").mkdir()
    monkeypatch.setenv("AUTOOPT_DATA_DIR", str(tmp_path))
    assert load_settings().dataset("mini") == tmp_path / "mini"


def test_environ_sets_unsets_and_restores(monkeypatch) -> None:
    from autooptimizer.settings import environ, get_settings

    monkeypatch.setenv("AUTOOPT_ENV", "staging")
    monkeypatch.setenv("AUTOOPT_LLM_MODEL", "m0")
    monkeypatch.delenv("AUTOOPT_LLM_BASE_URL", raising=False)
    with environ({"AUTOOPT_ENV": "prod", "AUTOOPT_LLM_MODEL": None}, also=("AUTOOPT_LLM_BASE_URL",)):
        assert get_settings().env == "prod" and "AUTOOPT_LLM_MODEL" not in os.environ
        os.environ["AUTOOPT_LLM_BASE_URL"] = "http://127.0.0.1:1/v1"  # set inside the block: undone too
    assert get_settings().env == "staging" and os.environ["AUTOOPT_LLM_MODEL"] == "m0"
    assert "AUTOOPT_LLM_BASE_URL" not in os.environ
