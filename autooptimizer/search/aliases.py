"""Model aliases (champion, gold, ...) in AUTOOPT_HOME/models/aliases.json.

The one place that reads and writes the file, so the ML path can mirror it into the MLflow registry without hunting
for other writers. `gold` is the fixed reference the promotion gate compares against; `champion` is what serves.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from autooptimizer.errors import NotFoundError
from autooptimizer.search.model_store import check_version_name, models_dir

CHAMPION = "champion"
CHALLENGER = "challenger"
GOLD = "gold"
_LOCK = threading.Lock()


def aliases_path() -> Path:
    return models_dir() / "aliases.json"


def all_aliases() -> dict[str, str]:
    p = aliases_path()
    return json.loads(p.read_text()) if p.is_file() else {}


def get_alias(name: str) -> str | None:
    return all_aliases().get(name)


def require_alias(name: str) -> str:
    version = get_alias(name)
    if version is None:
        raise NotFoundError(
            f"No model has the alias {name!r} yet.", "Run `autoopt bootstrap` to create the first champion."
        )
    return version


def set_alias(name: str, version: str, only_if_missing: bool = False) -> str:
    """Point `name` at `version` (atomic file replace). Returns the version the alias points at afterwards."""
    check_version_name(version)
    with _LOCK:
        current = all_aliases()
        if only_if_missing and name in current:
            return current[name]
        current[name] = version
        tmp = aliases_path().with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(current, indent=2, sort_keys=True))
        os.replace(tmp, aliases_path())
        return version
