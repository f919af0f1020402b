"""Settings from environment variables (flags override them); every path hangs off AUTOOPT_HOME.

Read once per process with `get_settings()`; tests call `get_settings.cache_clear()` after changing env.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, Field

from autooptimizer.errors import ConfigError

ENVIRONMENTS = ("dev", "staging", "prod")
_REPO_ROOT = Path(__file__).resolve().parent.parent


def _default_data_dir() -> Path | None:
    """`../shared/datasets` beside the working directory or beside the checkout, when it exists."""
    for base in (Path.cwd(), _REPO_ROOT):
        candidate = (base / ".." / "shared" / "datasets").resolve()
        if candidate.is_dir():
            return candidate
    return None


class Settings(BaseModel):
    """Process-wide settings. Each field names its environment variable in the description."""

    home: Path = Field(description="AUTOOPT_HOME: state directory")
    data_dir: Path | None = Field(default=None, description="AUTOOPT_DATA_DIR: BEIR datasets")
    env: str = Field(default="dev", description="AUTOOPT_ENV: dev|staging|prod")
    prometheus_url: str = Field(default="http://127.0.0.1:9090", description="AUTOOPT_PROMETHEUS_URL")
    prometheus_port: int = Field(default=9090, description="AUTOOPT_PROMETHEUS_PORT")
    search_host: str = Field(default="127.0.0.1", description="AUTOOPT_SEARCH_HOST")
    search_port: int = Field(default=8700, description="AUTOOPT_SEARCH_PORT")
    api_port: int = Field(default=8800, description="AUTOOPT_API_PORT")
    api_token: str | None = Field(default=None, description="AUTOOPT_API_TOKEN")
    threads: int = Field(default=1, ge=1, description="AUTOOPT_THREADS: torch CPU threads")
    mlflow_tracking_uri: str | None = Field(default=None, description="AUTOOPT_MLFLOW_URI")
    llm_base_url: str | None = Field(default=None, description="AUTOOPT_LLM_BASE_URL")
    llm_model: str = Field(default="gpt-4o-mini", description="AUTOOPT_LLM_MODEL")
    openai_api_key: str | None = Field(default=None, description="OPENAI_API_KEY")
    langsmith_api_key: str | None = Field(default=None, description="LANGSMITH_API_KEY")
    langsmith_endpoint: str | None = Field(default=None, description="LANGSMITH_ENDPOINT")
    argocd_url: str | None = Field(default=None, description="AUTOOPT_ARGOCD_URL")
    argocd_token: str | None = Field(default=None, description="AUTOOPT_ARGOCD_TOKEN")
    argocd_app: str = Field(default="search-reranker", description="AUTOOPT_ARGOCD_APP")
    gitops_remote: str | None = Field(default=None, description="AUTOOPT_GITOPS_REMOTE")

    @property
    def search_url(self) -> str:
        return f"http://{self.search_host}:{self.search_port}"

    @property
    def feedback_log(self) -> Path:
        """The search service's judgment log (JSONL): the A/B judge and the ML path read it."""
        return self.path("feedback", "feedback.jsonl")

    def path(self, *parts: str) -> Path:
        """A path under AUTOOPT_HOME; its parent directory is created."""
        p = self.home.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def require_data_dir(self) -> Path:
        if self.data_dir is None or not self.data_dir.is_dir():
            raise ConfigError(
                f"Dataset directory {self.data_dir or '(unset)'} does not exist.",
                "Set AUTOOPT_DATA_DIR to a folder of BEIR-format datasets (e.g. ../shared/datasets).",
            )
        return self.data_dir

    def dataset(self, name_or_path: str | Path) -> Path:
        """Resolve a dataset given as a path or as a folder name under AUTOOPT_DATA_DIR."""
        p = Path(name_or_path).expanduser()
        if p.is_dir():
            return p.resolve()
        if not p.is_absolute() and len(p.parts) == 1:
            cand = self.require_data_dir() / p
            if cand.is_dir():
                return cand
        raise ConfigError(
            f"Dataset {name_or_path} not found.",
            "Pass a BEIR-format folder (corpus.jsonl, queries.jsonl, qrels) or a name under AUTOOPT_DATA_DIR.",
        )


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r} is not an integer.", f"Set {name} to a whole number.") from exc


def load_settings() -> Settings:
    env = os.environ
    name = env.get("AUTOOPT_ENV", "dev")
    if name not in ENVIRONMENTS:
        raise ConfigError(f"AUTOOPT_ENV={name!r} is not a known environment.", f"Use one of {ENVIRONMENTS}.")
    data = env.get("AUTOOPT_DATA_DIR")
    prom_port = _env_int("AUTOOPT_PROMETHEUS_PORT", 9090)
    home = Path(env.get("AUTOOPT_HOME") or Path.home() / ".autooptimizer").expanduser().resolve()
    return Settings(
        home=home,
        data_dir=Path(data).expanduser().resolve() if data else _default_data_dir(),
        env=name,
        prometheus_url=env.get("AUTOOPT_PROMETHEUS_URL", f"http://127.0.0.1:{prom_port}"),
        prometheus_port=prom_port,
        search_host=env.get("AUTOOPT_SEARCH_HOST", "127.0.0.1"),
        search_port=_env_int("AUTOOPT_SEARCH_PORT", 8700),
        api_port=_env_int("AUTOOPT_API_PORT", 8800),
        api_token=env.get("AUTOOPT_API_TOKEN") or None,
        threads=_env_int("AUTOOPT_THREADS", 1),
        mlflow_tracking_uri=env.get("AUTOOPT_MLFLOW_URI") or None,
        llm_base_url=env.get("AUTOOPT_LLM_BASE_URL") or None,
        llm_model=env.get("AUTOOPT_LLM_MODEL", "gpt-4o-mini"),
        openai_api_key=env.get("OPENAI_API_KEY") or None,
        langsmith_api_key=env.get("LANGSMITH_API_KEY") or None,
        langsmith_endpoint=env.get("LANGSMITH_ENDPOINT") or None,
        argocd_url=env.get("AUTOOPT_ARGOCD_URL") or None,
        argocd_token=env.get("AUTOOPT_ARGOCD_TOKEN") or None,
        argocd_app=env.get("AUTOOPT_ARGOCD_APP", "search-reranker"),
        gitops_remote=env.get("AUTOOPT_GITOPS_REMOTE") or None,
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()


def mlflow_uri(settings: Settings) -> str:
    """The MLflow tracking URI: a configured server, else sqlite under AUTOOPT_HOME."""
    return settings.mlflow_tracking_uri or f"sqlite:///{settings.path('mlflow', 'mlflow.db')}"


OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_DATASETS_OFFLINE": "1",
    "CREWAI_DISABLE_TELEMETRY": "true",
    "CREWAI_TRACING_ENABLED": "false",
    "ANONYMIZED_TELEMETRY": "False",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "AUTOGEN_DISABLE_RUNTIME_TRACING": "true",
    "TOKENIZERS_PARALLELISM": "false",
}


def apply_offline_env() -> None:
    """Keep every library off the network unless the user configured otherwise."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    if not os.environ.get("LANGSMITH_API_KEY"):
        os.environ.setdefault("LANGSMITH_TRACING", "false")
