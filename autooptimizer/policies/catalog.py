"""The tool catalogue (`catalog.yaml`): owner and risk of every tool, known to the PDP before any tool module loads.

Operators may point `AUTOOPT_POLICY_DIR` at a folder holding their own `catalog.yaml` and `.cedar` files.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from autooptimizer.errors import ConfigError

PACKAGE_DIR = Path(__file__).parent
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def policy_dir() -> Path:
    """Where the catalogue and the .cedar files are read from: AUTOOPT_POLICY_DIR, else the packaged folder."""
    return Path(os.environ.get("AUTOOPT_POLICY_DIR") or PACKAGE_DIR)


class ToolEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    owner: str
    risk: Literal["read", "change", "critical"]


class Catalog(BaseModel):
    model_config = ConfigDict(extra="forbid")
    agents: list[str]
    tools: dict[str, ToolEntry]

    @field_validator("agents")
    @classmethod
    def _agent_names(cls, v: list[str]) -> list[str]:
        bad = [a for a in v if not _NAME.match(a)]
        if bad:
            raise ValueError(f"bad agent names {bad}")
        return v

    @field_validator("tools")
    @classmethod
    def _tool_names(cls, v: dict[str, ToolEntry]) -> dict[str, ToolEntry]:
        bad = [t for t in v if not _NAME.match(t)]
        if bad:
            raise ValueError(f"bad tool names {bad}")
        return v

    def model_post_init(self, __context: object) -> None:
        unknown = {t: e.owner for t, e in self.tools.items() if e.owner not in self.agents}
        if unknown:
            raise ValueError(f"tools owned by agents not in `agents`: {unknown}")


def load_catalog_file(path: Path) -> Catalog:
    if not path.is_file():
        raise ConfigError(f"Policy catalogue {path} not found.", "Restore catalog.yaml or fix AUTOOPT_POLICY_DIR.")
    try:
        return Catalog.model_validate(yaml.safe_load(path.read_text()) or {})
    except (yaml.YAMLError, ValidationError, ValueError) as exc:
        raise ConfigError(f"Policy catalogue {path} is invalid: {exc}",
                          "Correct the file (see docs/policies.md).") from exc


@lru_cache(maxsize=4)
def _cached(path: str) -> Catalog:
    return load_catalog_file(Path(path))


def load_catalog() -> Catalog:
    return _cached(str(policy_dir() / "catalog.yaml"))


def forget_catalog() -> None:
    """Drop the cached catalogue, so the next `load_catalog` reads the file again (`reload_policies`)."""
    _cached.cache_clear()
