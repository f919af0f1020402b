"""`autoopt bench search` end to end on tiny data: real service processes (1 and 2 uvicorn workers), real load."""

from __future__ import annotations

import json
import os
from pathlib import Path

from typer.testing import CliRunner

from autooptimizer.search import aliases, model_store
from autooptimizer.search.capacity import _tree_cpu_seconds, query_pool
from autooptimizer.search.model_store import ModelSpec
from autooptimizer.search.sample_data import write_tiny_beir
from autooptimizer.settings import get_settings


def _data(tmp_path: Path, monkeypatch) -> Path:
    data = tmp_path / "data"
    write_tiny_beir(data / "tiny")
    write_tiny_beir(data / "other", topics=["wing", "soil"])
    monkeypatch.setenv("AUTOOPT_DATA_DIR", str(data))
    get_settings.cache_clear()
    return data


def test_query_pool_is_distinct_and_seeded(tmp_path, monkeypatch):
    _data(tmp_path, monkeypatch)
    pool = query_pool(seed=3)
    assert len(pool) == len(set(pool)) == 6  # `other` repeats two of tiny's queries: counted once
    assert pool == query_pool(seed=3) and sorted(pool) == sorted(query_pool(seed=4))


def test_tree_cpu_counts_this_process():
    assert _tree_cpu_seconds(os.getpid()) > 0
    assert _tree_cpu_seconds(2**22 + 12345) == 0.0  # no such process: 0, not an error


def test_bench_search_reports_every_setting_and_the_limit(tmp_path, monkeypatch):
    from autooptimizer.cli.app import app

    _data(tmp_path, monkeypatch)
    model_store.save(ModelSpec(version="tiny-bm25", kind="bm25", fusion_weight=0.0, rerank_depth=10))
    aliases.set_alias(aliases.CHAMPION, "tiny-bm25")
    res = CliRunner().invoke(app, ["bench", "search", "--datasets", "tiny", "--workers", "1,2", "--cache", "off",
                                   "--rates", "5,10", "--seconds", "1", "--calibrate", "10", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout[res.stdout.index("{"):])
    assert out["model"] == "tiny-bm25" and [s["workers"] for s in out["settings"]] == [1, 2]
    cal = out["calibration"][0]
    assert [s["stage"] for s in cal["stages"]] == ["bm25", "encode", "rerank", "fusion", "serialise"]
    assert cal["limit_rps"] == round(out["cores"] / (cal["cpu_ms_per_request"] / 1000), 1) or cal["limit_rps"] > 0
    for s in out["settings"]:
        assert [st["offered_rps"] for st in s["steps"]] == [5.0, 10.0]
        assert all(st["ok"] == st["sent"] == st["offered_rps"] for st in s["steps"])  # 1 s steps, nothing lost
        assert s["saturation_rps"] == max(st["achieved_rps"] for st in s["steps"])
        assert s["ratio_to_limit"] == round(s["saturation_rps"] / s["limit_rps"], 2)
        assert s["server_cpu_ms_per_request"] > 0


def test_query_pool_leaves_out_queries_the_service_refuses(tmp_path, monkeypatch):
    import json

    from autooptimizer.search.app import MAX_QUERY_CHARS

    data = _data(tmp_path, monkeypatch)
    with (data / "tiny" / "queries.jsonl").open("a", encoding="utf-8") as fh:  # cisi has ten such queries
        fh.write(json.dumps({"_id": "long", "text": "wing " * (MAX_QUERY_CHARS // 5 + 1)}) + "\n")
    pool = query_pool(seed=0)
    assert len(pool) == 6 and all(len(q) <= MAX_QUERY_CHARS for q in pool)
