"""Model versions on disk: AUTOOPT_HOME/models/<version>/model.json (+ optional weights/ and extra JSON files).

A version is immutable once written: saving the same version with different content is refused, so a version id
always means one thing to the A/B judge, the deployer and the rollback path. Because nothing rewrites a stored file,
a weights file identical to one another version already holds is stored once (a hard link): a chained repair keeps
its parent's unchanged experts and reference set, and would otherwise copy them with every retrain.
"""

from __future__ import annotations

import filecmp
import hashlib
import json
import os
import re
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, field_validator

from autooptimizer.errors import InputError, NotFoundError

_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
WEIGHTS_DIR = "weights"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class ModelSpec(BaseModel):
    """What the service needs to build a pipeline for one version."""

    version: str
    kind: str = "bi_encoder"
    encoder_path: str | None = Field(
        default=None, description="None = base MiniLM; a relative path is resolved against the version directory"
    )
    fusion_weight: float = Field(default=0.6, ge=0.0, le=1.0)
    rerank_depth: int = Field(default=50, ge=1, le=1000)
    params: dict[str, Any] = Field(default_factory=dict)
    parent: str | None = None
    created_at: str = Field(default_factory=_now)
    notes: str = ""

    @field_validator("version")
    @classmethod
    def _valid_version(cls, v: str) -> str:
        check_version_name(v)
        return v

    def content(self) -> dict[str, Any]:
        """Fields that define behaviour (not when or why it was made)."""
        return self.model_dump(exclude={"created_at", "notes"})

    def resolved_encoder_path(self) -> str | None:
        if self.encoder_path is None:
            return None
        p = Path(self.encoder_path)
        return str(p if p.is_absolute() else version_dir(self.version) / p)


def check_version_name(version: str) -> None:
    if not _VERSION_RE.match(version or ""):
        raise InputError(
            f"Model version {version!r} is not a valid name.",
            "Use letters, digits, '.', '_' or '-' (up to 100 characters), starting with a letter or digit.",
        )


def content_version(prefix: str, payload: dict[str, Any], length: int = 10) -> str:
    """A deterministic version id `<prefix>-<hash of payload>`: same inputs, same id."""
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:length]
    return f"{prefix}-{digest}"


def models_dir() -> Path:
    from autooptimizer.settings import get_settings

    d = get_settings().home / "models"
    d.mkdir(parents=True, exist_ok=True)
    return d


def version_dir(version: str) -> Path:
    check_version_name(version)
    return models_dir() / version


def exists(version: str) -> bool:
    return (version_dir(version) / "model.json").is_file()


def load(version: str) -> ModelSpec:
    path = version_dir(version) / "model.json"
    if not path.is_file():
        known = ", ".join(list_versions()[-5:]) or "none"
        raise NotFoundError(f"Model version {version!r} not found in {models_dir()}.",
                            f"Use a stored version (latest: {known}) or run `autoopt bootstrap`.")
    return ModelSpec.model_validate_json(path.read_text())


def runtime_dependencies(spec: ModelSpec) -> set[str]:
    """Versions `spec` needs stored to serve: an ltr_fusion's fallback (its files resolve against that version's
    folder). The lineage (`parent`) alone is provenance, not a runtime need."""
    fallback = spec.params.get("fallback") if spec.kind == "ltr_fusion" else None
    version = fallback.get("version") if isinstance(fallback, dict) else None
    return {version} if isinstance(version, str) and version != spec.version else set()


def list_versions() -> list[str]:
    """Stored versions, oldest first by creation time."""
    specs = []
    for p in models_dir().glob("*/model.json"):
        try:
            specs.append(ModelSpec.model_validate_json(p.read_text()))
        except ValueError:
            continue
    return [s.version for s in sorted(specs, key=lambda s: (s.created_at, s.version))]


def save(spec: ModelSpec, weights_dir: str | Path | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write a version atomically. `weights_dir` is copied to <version>/weights and `encoder_path` set to it;
    `extra` maps file names to JSON-able objects (e.g. eval results). Returns the version directory.

    Re-saving identical content is a no-op; different content under an existing version raises InputError."""
    if weights_dir is not None:
        spec = spec.model_copy(update={"encoder_path": WEIGHTS_DIR})
    target = version_dir(spec.version)
    if exists(spec.version):
        current = load(spec.version)
        if current.content() != spec.content():
            raise InputError(
                f"Model version {spec.version!r} already exists with different content; versions are immutable.",
                "Save under a new version id (e.g. content_version(...)).",
            )
        return target
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.version}-", dir=models_dir()))
    try:
        if weights_dir is not None:
            src = Path(weights_dir)
            if not src.is_dir():
                raise NotFoundError(f"Weights folder {src} does not exist.", "Pass the folder the trainer saved.")
            shutil.copytree(src, tmp / WEIGHTS_DIR)
            _share_identical(tmp / WEIGHTS_DIR)
        for name, obj in (extra or {}).items():
            if "/" in name or name == "model.json":
                raise InputError(f"Extra file name {name!r} is not allowed.", "Use a plain file name.")
            (tmp / name).write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
        (tmp / "model.json").write_text(spec.model_dump_json(indent=2))
        try:
            os.rename(tmp, target)
        except OSError:
            if exists(spec.version):  # another writer won the race; immutable content check again
                return save(spec) if weights_dir is None else target
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _share_identical(weights: Path) -> None:
    """Replace each file under `weights` that is byte-identical to the file at the same relative path in another
    stored version's weights with a hard link to it (one copy on disk; deleting either folder keeps the other's).
    Where the file system refuses links, or another version's file cannot be read, the copy stays."""
    others = [d / WEIGHTS_DIR for d in models_dir().iterdir() if d.is_dir() and not d.name.startswith(".")]
    for path in (p for p in weights.rglob("*") if p.is_file() and not p.is_symlink()):
        rel = path.relative_to(weights)
        for other in others:
            twin = other / rel
            if _identical(twin, path):
                link = path.with_name(f".{path.name}.link")
                try:
                    os.link(twin, link)
                    os.replace(link, path)
                except OSError:
                    link.unlink(missing_ok=True)
                    continue
                break


def _identical(twin: Path, path: Path) -> bool:
    """`twin` is a regular file with `path`'s bytes; False when it cannot be read (another owner's 0600 file, an I/O
    error): sharing only saves space, so it never fails a save."""
    try:
        return twin.is_file() and not twin.is_symlink() and twin.stat().st_size == path.stat().st_size \
            and filecmp.cmp(twin, path, shallow=False)
    except OSError:
        return False


def read_extra(version: str, name: str) -> Any | None:
    """A JSON file saved beside model.json, or None."""
    p = version_dir(version) / name
    return json.loads(p.read_text()) if p.is_file() else None
