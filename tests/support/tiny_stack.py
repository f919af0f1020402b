"""The start of the loop tests that run real cycles: a tiny real search service and no Prometheus."""

from __future__ import annotations

from pathlib import Path

import pytest

from autooptimizer.settings import get_settings
from autooptimizer.testing import TinyService, make_versions


def start_tiny_service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, versions: list[str]) -> TinyService:
    """Make `versions` (the first is served) and serve it on AUTOOPT_SEARCH_PORT; AUTOOPT_PROMETHEUS_URL refuses,
    so gates read unknown. The caller stops the service."""
    monkeypatch.setenv("AUTOOPT_PROMETHEUS_URL", "http://127.0.0.1:9")
    make_versions(versions)
    svc = TinyService(tmp_path, versions[0])
    monkeypatch.setenv("AUTOOPT_SEARCH_PORT", str(svc.server.port))
    get_settings.cache_clear()
    return svc
