"""`autoopt bench release` end to end on tiny data: two real service processes (glibc's arenas, then the cap), each
through champion -> overloaded untrained cross-encoder -> rollback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from autooptimizer.errors import AutoOptError, ConfigError, InputError, NotFoundError
from autooptimizer.search import aliases, model_store
from autooptimizer.search.model_store import ModelSpec
from autooptimizer.search.release_bench import BAD
from autooptimizer.search.sample_data import write_tiny_beir
from autooptimizer.settings import get_settings


def _tiny_champion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    write_tiny_beir(data / "tiny")
    monkeypatch.setenv("AUTOOPT_DATA_DIR", str(data))
    monkeypatch.setenv("AUTOOPT_THREADS", "1")
    get_settings.cache_clear()
    model_store.save(ModelSpec(version="tiny-bm25", kind="bm25", fusion_weight=0.0, rerank_depth=10))
    aliases.set_alias(aliases.CHAMPION, "tiny-bm25")


def test_bench_release_measures_both_arena_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from autooptimizer.cli.app import app

    _tiny_champion(tmp_path, monkeypatch)
    res = CliRunner().invoke(app, ["bench", "release", "--datasets", "tiny", "--replicas", "3", "--threads", "4",
                                   "--seconds", "2", "--settle", "1", "--throughput", "1", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout[res.stdout.index("{"):])
    assert out["champion"] == "tiny-bm25" and out["replicas"] == 3 and out["overload_threads"] == 4
    assert [r["arenas"] for r in out["runs"]] == ["glibc", "2"]
    for r in out["runs"]:
        assert r["failed"] == 0 and r["cross_encoder_requests"] > 0 and r["champion_rps"] > 0
        assert r["released"]["versions"] == [BAD] and r["released"]["collected"] is True
        assert r["overloaded_mib"] > r["before_mib"], "the cross-encoder's weights were loaded"
        assert r["kept_mib"] == round(r["after_mib"] - r["before_mib"], 1)
    assert model_store.exists(BAD), "the bad version the bench deploys is a real model spec"


@pytest.mark.parametrize("args,error,needle", [
    (["--model", "nope"], NotFoundError, "'nope' not found"),
    (["--datasets", "nope"], ConfigError, "Dataset nope not found"),
    (["--datasets", ","], InputError, "--datasets ',' names no dataset"),
    (["--model", BAD], InputError, f"{BAD!r} is the untrained cross-encoder"),
])
def test_bad_inputs_are_refused_before_any_service_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          args: list[str], error: type[AutoOptError],
                                                          needle: str) -> None:
    """A wrong model or dataset used to surface only as a service process's exit (its traceback's tail, "Read the
    log."), and the bench's own bad model as champion waited 300 s per setting for a release that never came."""
    from autooptimizer.cli.app import app

    _tiny_champion(tmp_path, monkeypatch)
    res = CliRunner().invoke(app, ["bench", "release", *args, "--seconds", "1", "--settle", "0.5",
                                   "--throughput", "0.5", "--json"])
    assert isinstance(res.exception, error), res.output
    assert needle in res.exception.problem and res.exception.fix
    assert not (get_settings().home / "bench" / "release").exists(), "no service was started"
