"""`autoopt bench loop`: time from a bad deploy to a completed automatic rollback, on the embedded default
(local bare GitOps repo + local deployer + the real search service + a real Prometheus + simulated traffic).

The champion is a BM25-only version (no corpus embedding, so the benchmark starts in seconds); the bad model is an
untrained cross-encoder head (random ranking). Timeline: commit+apply of the bad model -> the watch cycle detects
the NDCG collapse -> git revert + the deployer restores the champion.
"""

from __future__ import annotations

import os
import time
from typing import Any

CHAMPION = "bench-bm25"
BAD = "bench-bad-untrained-ce"


def bench_rollback(watch_seconds: float = 30.0, dataset: str = "scifact", rate: float = 10.0,
                   warmup_seconds: float = 20.0) -> dict[str, Any]:
    from autooptimizer.infra.stack import LocalStack
    from autooptimizer.loop.cycle import CycleOptions, CycleRunner
    from autooptimizer.loop.gitops import HelmPatch
    from autooptimizer.loop.release import Release
    from autooptimizer.search import model_store
    from autooptimizer.search.model_store import ModelSpec
    from autooptimizer.settings import get_settings
    from autooptimizer.simulator import Scenario, Simulator, load_workload

    if not model_store.exists(CHAMPION):
        model_store.save(ModelSpec(version=CHAMPION, kind="bm25", fusion_weight=0.0, notes="benchmark champion"))
    if not model_store.exists(BAD):
        model_store.save(ModelSpec(version=BAD, kind="cross_encoder", fusion_weight=1.0, rerank_depth=20,
                                   notes="deliberately bad: untrained cross-encoder head"))
    stack = LocalStack(service="process", serve_args=["--datasets", dataset, "--model", CHAMPION])
    sim = None
    try:
        stack.start()
        os.environ["AUTOOPT_PROMETHEUS_URL"] = stack.prometheus_url
        os.environ["AUTOOPT_SEARCH_PORT"] = stack.search_url.rsplit(":", 1)[1]
        get_settings.cache_clear()
        settings = get_settings()
        workload = load_workload([dataset], split="train", max_queries=200, seed=0)
        sim = Simulator(Scenario(datasets=[dataset], rate=rate, duration=600, seed=0), stack.search_url,
                        workload=workload).start()
        time.sleep(warmup_seconds)  # the champion's pre-deploy NDCG samples (the watch's baseline)
        runner = CycleRunner(settings)
        rel = Release(settings, journal=runner.journal)
        base, _ = rel.current()
        t0 = time.monotonic()
        rel.deploy(HelmPatch(model_version=BAD, replicas=base.replicas), f"Promote {BAD} (benchmark)")
        t_deployed = time.monotonic()
        rec = runner.run(CycleOptions(trigger="bench", gate="deploy_watch", watch_seconds=watch_seconds))
        t_done = time.monotonic()
        ok, patch, _state = rel.consistent()
        watch: dict[str, Any] = rec.summary.get("watch") or {}
        rollback: dict[str, Any] = rec.summary.get("rollback") or {}
        return {
            "outcome": rec.outcome,
            "cycle_id": rec.id,
            "consistent_after": ok,
            "serving_after": patch.model_version if patch else None,
            "deploy_seconds": round(t_deployed - t0, 2),
            "deployed_to_rollback_done_seconds": round(t_done - t_deployed, 2),
            "bad_commit_to_rollback_done_seconds": round(t_done - t0, 2),
            "watch_samples_at_detection": watch.get("samples"),
            "bad_mean_ndcg": watch.get("mean_ndcg"),
            "champion_mean_ndcg": watch.get("baseline_mean_ndcg"),
            "rollback_seconds": rollback.get("seconds"),
            "target_seconds": 60,
        }
    finally:
        if sim is not None:
            sim.stop()
            sim.join(30)
        stack.stop()
