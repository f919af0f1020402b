"""`run_demo` end to end on tiny data: real Prometheus, the real service as a subprocess, the simulator, a shift."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.live_stack import write_shift_datasets, write_test_profile

from autooptimizer.demo import DemoContext, DemoOptions, DemoPhase, run_demo
from autooptimizer.infra.net import port_open
from autooptimizer.settings import get_settings


@pytest.mark.prometheus
def test_demo_ndcg_gate_goes_ok_then_firing_and_everything_stops(tmp_path: Path, monkeypatch, capsys) -> None:
    from autooptimizer.search.model_store import ModelSpec, save

    monkeypatch.setenv("AUTOOPT_PROFILES_DIR", str(write_test_profile(tmp_path / "profiles")))
    get_settings.cache_clear()
    good, bad = write_shift_datasets(tmp_path / "data")
    save(ModelSpec(version="tiny-bm25", kind="bm25", fusion_weight=0.5, rerank_depth=20))
    seen: dict = {}

    def extra(ctx: DemoContext) -> DemoPhase:  # how the loop extends the demo: a phase while the stack runs
        seen["urls"] = (ctx.stack.search_url, ctx.stack.prometheus_url)
        seen["firing"] = ctx.gates().firing
        return DemoPhase(name="extra", detail={"firing": seen["firing"]})

    opts = DemoOptions(datasets=[str(good)], shift_to=str(bad), rate=20, model="tiny-bm25", phase_timeout=60,
                       hold_seconds=1)
    result = run_demo(opts, live=False, extra_phases=[extra])

    assert result.ok, result.error
    assert [p.name for p in result.phases] == ["champion", "stack", "healthy", "shift", "extra", "stop"]
    assert all(p.status == "ok" for p in result.phases)
    ndcg = [t["gates"]["ndcg_drop"] for t in result.timeline if "gates" in t]
    first_ok = ndcg.index("ok")
    assert "firing" in ndcg[first_ok:], ndcg  # ok -> firing, in that order
    assert result.phases[3].detail["ndcg_gate"]["value"] >= 3.0
    assert "ndcg_drop" in seen["firing"]
    progress = capsys.readouterr().err  # without the live display (--json) progress still shows, on stderr
    assert "corpus shift: the query mix moves to" in progress and "stopping the simulator" in progress
    for url in seen["urls"]:  # the demo stopped the service and Prometheus it started
        port = int(url.rsplit(":", 1)[1])
        assert not port_open("127.0.0.1", port)
