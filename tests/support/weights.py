"""A trainer's weights folder for model_store.save: relative path -> bytes."""

from __future__ import annotations

from pathlib import Path


def weights_folder(folder: Path, files: dict[str, bytes]) -> Path:
    """Write `files` (relative paths, sub-folders created) under `folder`; returns `folder`."""
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return folder
