"""Settings from environment variables (flags override them); every path hangs off AUTOOPT_HOME.

Read once per process with `get_settings()`; tests call `get_settings.cache_clear()` after changing env.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from autooptimizer.errors import ConfigError
from autooptimizer.infra.cpu import idle_threads

ENVIRONMENTS = ("dev", "staging", "prod")
_REPO_ROOT = Path(__file__).resolve().parent.parent


def _default_data_dir() -> Path | None:
    """`../shared/datasets` beside the working directory or beside the checkout, when it exists."""
    for base in (Path.cwd(), _REPO_ROOT):
        candidate = (base / ".." / "shared" / "datasets").resolve()
        if candidate.is_dir():
            return candidate
    return None


class Settings(BaseSettings):
    """Process-wide settings, read from environment variables by pydantic-settings (each field names its variable).

    An empty variable counts as unset. A value of the wrong type raises ConfigError naming the variable.
    """

    model_config = SettingsConfigDict(env_prefix="AUTOOPT_", env_ignore_empty=True, extra="ignore",
                                      populate_by_name=True)

    home: Path = Field(default_factory=lambda: Path.home() / ".autooptimizer",
                       description="AUTOOPT_HOME: state directory")
    data_dir: Path | None = Field(default_factory=_default_data_dir, description="AUTOOPT_DATA_DIR: BEIR datasets")
    env: str = Field(default="dev", description="AUTOOPT_ENV: dev|staging|prod")
    prometheus_port: int = Field(default=9090, description="AUTOOPT_PROMETHEUS_PORT")
    prometheus_url: str = Field(default="", description="AUTOOPT_PROMETHEUS_URL (default: 127.0.0.1 at the port)")
    search_host: str = Field(default="127.0.0.1", description="AUTOOPT_SEARCH_HOST")
    search_port: int = Field(default=8700, description="AUTOOPT_SEARCH_PORT")
    api_port: int = Field(default=8800, description="AUTOOPT_API_PORT")
    api_token: str | None = Field(default=None, description="AUTOOPT_API_TOKEN")
    read_networks: str = Field(default="", description="AUTOOPT_READ_NETWORKS: comma-separated CIDRs whose clients "
                               "may read the API and console without the token (loopback always may)")
    threads: int = Field(default_factory=idle_threads, ge=1,
                         description="AUTOOPT_THREADS: torch CPU threads (default: the cores idle at start, "
                         "see infra/cpu.py)")
    query_cache: int = Field(default=4096, ge=0, description="AUTOOPT_QUERY_CACHE: query vectors kept per encoder "
                             "(LRU; 0 turns the cache off)")
    mlflow_tracking_uri: str | None = Field(default=None, validation_alias="AUTOOPT_MLFLOW_URI",
                                            description="AUTOOPT_MLFLOW_URI")
    llm_base_url: str | None = Field(default=None, description="AUTOOPT_LLM_BASE_URL")
    llm_model: str = Field(default="gpt-4o-mini", description="AUTOOPT_LLM_MODEL")
    openai_api_key: str | None = Field(default=None, validation_alias="OPENAI_API_KEY", description="OPENAI_API_KEY")
    langsmith_api_key: str | None = Field(default=None, validation_alias="LANGSMITH_API_KEY",
                                          description="LANGSMITH_API_KEY")
    langsmith_endpoint: str | None = Field(default=None, validation_alias="LANGSMITH_ENDPOINT",
                                           description="LANGSMITH_ENDPOINT")
    argocd_url: str | None = Field(default=None, description="AUTOOPT_ARGOCD_URL")
    argocd_token: str | None = Field(default=None, description="AUTOOPT_ARGOCD_TOKEN")
    argocd_app: str = Field(default="search-reranker", description="AUTOOPT_ARGOCD_APP")
    gitops_remote: str | None = Field(default=None, description="AUTOOPT_GITOPS_REMOTE")
    audit_segment_bytes: int = Field(default=16 << 20, ge=0, description="AUTOOPT_AUDIT_SEGMENT_BYTES: the audit "
                                     "log's active file rotates into a segment at this size (0: no size limit)")
    audit_segment_records: int = Field(default=0, ge=0, description="AUTOOPT_AUDIT_SEGMENT_RECORDS: ... or at this "
                                       "many records (0: no record limit)")

    @field_validator("home", "data_dir")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return None if value is None else Path(value).expanduser().resolve()

    @field_validator("env")
    @classmethod
    def _known_env(cls, value: str) -> str:
        if value not in ENVIRONMENTS:
            raise ValueError(f"AUTOOPT_ENV={value!r} is not a known environment; use one of {ENVIRONMENTS}")
        return value

    @field_validator("read_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        import ipaddress

        for part in (p.strip() for p in value.split(",")):
            if part:
                try:
                    ipaddress.ip_network(part, strict=False)
                except ValueError as exc:
                    raise ValueError(f"{part!r} is not a network in CIDR form (e.g. 10.0.0.0/8)") from exc
        return value

    @model_validator(mode="after")
    def _prometheus_url_from_port(self) -> Settings:
        if not self.prometheus_url:
            self.prometheus_url = f"http://127.0.0.1:{self.prometheus_port}"
        return self

    @property
    def threads_auto(self) -> bool:
        """True when AUTOOPT_THREADS is unset: long encodes may then re-check the idle cores (infra/cpu.py)."""
        return "threads" not in self.model_fields_set

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


def _variable(field: str) -> str:
    info = Settings.model_fields[field]
    alias = info.validation_alias
    return alias if isinstance(alias, str) else f"AUTOOPT_{field.upper()}"


def load_settings() -> Settings:
    """Read the settings now; a bad value is a ConfigError that names its environment variable."""
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        name = _variable(field) if field in Settings.model_fields else field
        raise ConfigError(f"{name}={os.environ.get(name)!r} is invalid: {first['msg']}.",
                          f"Set {name} to a valid value (see docs/operations.md).") from exc


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


@contextmanager
def environ(values: dict[str, str | None], also: tuple[str, ...] = ()) -> Iterator[None]:
    """Set (a str) or unset (None) environment variables for a block, re-reading the settings on entry and exit;
    those and `also` (variables the block itself sets) are restored on exit. Child processes inherit them."""
    saved = {k: os.environ.get(k) for k in (*values, *also)}
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    get_settings.cache_clear()
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        get_settings.cache_clear()
