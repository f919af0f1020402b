"""Test doubles: a registry holding the 16 canonical tools as small deterministic functions over an in-memory
world, so the agent machinery (PDP, adapters, frameworks, approvals, tracing) is exercised without Prometheus,
training or deployments. Clearly fake: for tests and docs examples only; never registered globally.

Each double takes the REAL tool's args model (so the playbooks' arguments are checked against the real
contracts), returns a result shaped like the real tool's, and supplies the same policy facts from its world.
`world.executed` lists every function that actually ran, which is how tests prove a denied call did not run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from autooptimizer.errors import InputError
from autooptimizer.gates import GATE_NAMES
from autooptimizer.tools.registry import ToolRegistry, ToolSpec


@dataclass
class FakeWorld:
    executed: list[tuple[str, dict]] = field(default_factory=list)
    versions: list[str] = field(default_factory=lambda: ["1"])
    stable: str = "1"
    canary: str | None = None
    gold: set[str] = field(default_factory=lambda: {"1"})
    ab_passed: set[str] = field(default_factory=set)
    ab_verdict: str = "pass"
    budget_remaining: float = 5.0
    price_per_second: float = 0.0005  # the profiles' pricePerComputeSecond: 900 s default budget -> 0.45
    gates_firing: list[str] = field(default_factory=lambda: ["ndcg_drop"])
    replicas: int = 1
    challenger_ndcg10: float = 0.71
    champion_ndcg10: float = 0.65


def _hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def demo_registry(world: FakeWorld | None = None) -> tuple[ToolRegistry, FakeWorld]:
    """A fresh registry with fake versions of every canonical tool, and the world they act on."""
    from autooptimizer.tools import data as d
    from autooptimizer.tools import devops as o
    from autooptimizer.tools import metrics as m
    from autooptimizer.tools import ml as ml

    w = world or FakeWorld()
    reg = ToolRegistry()

    def add(name: str, owner: str, risk: str, model: type[BaseModel], fn, facts=None) -> None:  # noqa: ANN001
        def run(args: BaseModel, ctx: object) -> dict:
            w.executed.append((name, args.model_dump()))
            return fn(args)

        reg.register(ToolSpec(name=name, owner=owner, risk=risk, description=f"(test double) {name}",
                              args_model=model, func=run,
                              facts=(lambda a, ctx: facts(a)) if facts is not None else None))

    gates = GATE_NAMES  # the product's own gate names, so the double cannot drift from them
    add("query_metrics", "metrics", "read", m.QueryMetricsArgs,
        lambda a: {"promql": a.promql, "ok": True, "samples": [{"labels": {}, "value": 0.61}], "error": None})
    add("check_quality_gates", "metrics", "read", m.CheckQualityGatesArgs, lambda a: {
        "gates": [{"name": g, "status": "firing" if g in w.gates_firing else "ok"} for g in gates],
        "firing": list(w.gates_firing), "env": a.env or "dev"})

    def build(a: d.BuildDatasetArgs) -> dict:
        fb = a.feedback_path or "/home/feedback/feedback.jsonl"
        h = _hash(fb, a.augmented_csv, a.from_dataset)
        return {"hash": h, "counts": {"queries": 12, "pairs": 60, "positives": 24, "hard_negatives": 36,
                                      "augmented_queries": 12 if a.augmented_csv else 0},
                "sources": [{"path": fb, "records": 12}], "parent_version": w.stable,
                "parent_dataset": a.from_dataset, "domains": ["scifact"], "path": f"/home/datasets/{h}"}

    add("build_dataset", "data", "change", d.BuildDatasetArgs, build)
    add("explain_reranker", "data", "read", d.ExplainRerankerArgs, lambda a: {
        "verdict": "corpus_shift", "evidence": ["query-term JSD 0.8 vs floor 0.3"], "jsd": 0.8,
        "under_weighted_terms": [["protein", 2], ["cell", 1]], "report": f"/home/diagnostics/{a.dataset}/r.json"})
    add("augment_dataset", "data", "change", d.AugmentDatasetArgs, lambda a: {
        "path": a.out_csv, "rows": a.size, "methods": {"keyboard": a.size}, "weak_queries": 6, "seed": a.seed,
        "skipped_methods": {}, "sha256": _hash(a.dataset, a.size)})

    def train(a: ml.TrainRerankerArgs) -> dict:
        v = str(len(w.versions) + 1)
        w.versions.append(v)
        return {"version": v, "run_id": f"run{v}", "trainer": a.trainer, "device": "cpu", "wall_seconds": 1.0,
                "metrics": {"dataset": a.dataset}}

    add("train_reranker", "ml", "change", ml.TrainRerankerArgs, train,
        facts=lambda a: {"estimated_cost": a.time_budget_s * w.price_per_second,
                         "budget_remaining": w.budget_remaining})

    def evaluate(a: ml.EvaluateModelArgs) -> dict:
        version = w.stable if a.model == "champion" else a.model
        score = w.champion_ndcg10 if version == w.stable else w.challenger_ndcg10
        return {"ndcg@10": score, "mrr@10": score, "recall@100": 0.9, "queries": 12, "version": version}

    add("evaluate_model", "ml", "read", ml.EvaluateModelArgs, evaluate)
    add("register_model", "ml", "change", ml.RegisterModelArgs, lambda a: {
        "name": "autoopt-reranker", "mlflow_version": a.version, "model_version": a.version, "aliases": []})
    def protection(version: str) -> dict:  # the same facts as tools/protection.py, from this world
        return {"target_checked": True, "target_is_gold": version in w.gold, "target_is_serving": version == w.stable,
                "target_is_canary": version == w.canary}

    add("delete_model", "ml", "critical", ml.DeleteModelArgs, lambda a: {"deleted": a.version},
        facts=lambda a: protection(a.version))
    add("set_model_alias", "ml", "critical", ml.SetModelAliasArgs, lambda a: {"alias": a.alias, "version": a.version},
        facts=lambda a: {**protection(a.version), "target_is_gold": a.alias == "gold", "alias_consistent":
                         a.alias == "challenger" or (a.alias == "champion" and a.version == w.stable)})

    def canary(a: o.DeployCanaryArgs) -> dict:
        w.canary = a.model_version
        return {"revision": _hash("canary", a.model_version)[:12], "stable": w.stable, "canary": a.model_version,
                "canary_weight": a.weight, "deployer": "fake"}

    def ab(a: o.StartABTestArgs) -> dict:
        if w.canary != a.model_version:
            raise InputError(f"{a.model_version} is not the running canary (canary: {w.canary}).",
                             "Deploy it with deploy_canary first.")
        if w.ab_verdict == "pass":
            w.ab_passed.add(a.model_version)
        return {"verdict": w.ab_verdict, "reasons": [f"fake judge says {w.ab_verdict}"],
                "control": {"model_version": a.control_version or w.stable},
                "treatment": {"model_version": a.model_version}}

    def promote(a: o.PromoteModelArgs) -> dict:
        replaced, w.stable, w.canary = w.stable, a.model_version, None
        return {"revision": _hash("promote", a.model_version)[:12], "stable": a.model_version, "replaced": replaced,
                "deployer": "fake"}

    add("deploy_canary", "devops", "change", o.DeployCanaryArgs, canary,
        facts=lambda a: {"canary_weight": a.weight})
    add("start_ab_test", "devops", "change", o.StartABTestArgs, ab)
    add("promote_model", "devops", "critical", o.PromoteModelArgs, promote,
        facts=lambda a: {"ab_passed": a.model_version in w.ab_passed})
    add("rollback_deployment", "devops", "critical", o.RollbackArgs, lambda a: {
        "revision": "r0", "reverted": a.revision or "head", "stable": w.stable, "deployer": "fake"})

    def scale(a: o.ScaleArgs) -> dict:
        previous, w.replicas = w.replicas, a.replicas
        return {"revision": "r1", "replicas": a.replicas, "previous_replicas": previous}

    add("scale_service", "devops", "change", o.ScaleArgs, scale)
    add("switch_variant", "devops", "change", o.SwitchVariantArgs, lambda a: {
        "revision": "r2", "rerank_depth": a.rerank_depth, "previous": None})
    return reg, w


# --- a tiny real world, for end-to-end runs on the REAL tools -------------------------------------------------------
CHAMPION = "v1-champion"


@dataclass
class RealWorld:
    """What `write_real_world` made: the data dir (AUTOOPT_DATA_DIR), the new domain's name, the feedback log."""

    data_dir: Path
    domain: str
    feedback: Path
    champion: str = CHAMPION
    source: Any = None  # the A/B sample source the run should read (`run_chat(..., sample_source=world.source)`)


def _write_split_beir(root: Path, corpus: list[dict], queries: list[dict], qrels: dict[str, list[tuple[str, str, int]]]
                      ) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus))
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    header = "query-id\tcorpus-id\tscore\n"
    (root / "qrels").mkdir(exist_ok=True)
    for split, rows in qrels.items():
        (root / "qrels" / f"{split}.tsv").write_text(header + "".join(f"{q}\t{d}\t{g}\n" for q, d, g in rows))
    return root


def write_real_world(root: Path, home: Path, domain: str = "aero") -> RealWorld:
    """Tiny data for the real data/ml tools, and a served champion with live feedback on a shifted domain.

    - `root/data/scifact`: the ORIGINAL domain (a tiny stand-in named like the real one, with train/test splits),
      which the tools read for reference queries (explain_reranker, the ltr domain gate);
    - `root/data/<domain>`: the new domain (8 topics x 4 docs, 2 judged queries per topic);
    - the champion: a `bi_encoder` version over the shipped MiniLM (aliases champion and gold);
    - `home/feedback/feedback.jsonl`: half of the new domain's queries served by the champion and judged, in the
      service's own log format (what the data agent builds its dataset from).
    Set AUTOOPT_DATA_DIR to `world.data_dir` (and clear the settings cache) before calling this.
    """
    from autooptimizer.ml.evaluate import load_split
    from autooptimizer.ml.feedback import simulate_feedback, split_judged
    from autooptimizer.search import aliases, model_store
    from autooptimizer.search.model_store import ModelSpec
    from autooptimizer.search.sample_data import QUERIES, TOPICS, write_tiny_domain

    data = root / "data"
    corpus, queries, qrels = [], [], {"train": [], "test": []}
    for topic, phrases in TOPICS.items():
        for i in range(5):
            corpus.append({"_id": f"{topic}{i}", "title": f"Study {i} on {phrases[i]}",
                           "text": f"Findings on {phrases[i]} and {phrases[(i + 2) % 5]}, a {topic} question."})
        forms = [QUERIES[topic], f"does {phrases[1]} change {phrases[3]}", f"{phrases[2]} and {phrases[4]} evidence",
                 f"role of {phrases[0]} in {phrases[2]}"]
        for j, text in enumerate(forms):
            split = "test" if j == 3 else "train"
            queries.append({"_id": f"q-{topic}-{j}", "text": text})
            qrels[split] += [(f"q-{topic}-{j}", f"{topic}{i}", 2 if i == j else 1) for i in range(5)]
    _write_split_beir(data / "scifact", corpus, queries, qrels)

    write_tiny_domain(data / domain, n_topics=8)

    champion = ModelSpec(version=CHAMPION, kind="bi_encoder", fusion_weight=0.6, rerank_depth=20)
    if not model_store.exists(champion.version):
        model_store.save(champion)
    aliases.set_alias(aliases.CHAMPION, champion.version)
    aliases.set_alias(aliases.GOLD, champion.version)
    collection, judged, judgments = load_split(data / domain)
    served, _ = split_judged(sorted(judged), seed=0)
    log = simulate_feedback(champion, collection, {q: judged[q] for q in served}, judgments,
                            home / "feedback" / "feedback.jsonl", dataset=domain)
    return RealWorld(data_dir=data, domain=domain, feedback=log)


def challenger_wins_source(champion: str = CHAMPION, per_poll: int = 40) -> Any:
    """A/B samples without live traffic: the champion's NDCG@10 around 0.5, any other version's around 0.7.
    Pass it to a run: `run_chat(..., sample_source=...)` (the loop passes its own to every tool call)."""
    import numpy as np

    from autooptimizer.testing import SyntheticSource

    class ChallengerWins(SyntheticSource):
        def samples(self, model_version: str, since: float, until: float | None = None) -> list[float]:
            mean = 0.5 if model_version == champion else 0.7
            return list(np.clip(self.rng.normal(mean, 0.05, self.per_poll), 0, 1))

    return ChallengerWins({}, per_poll=per_poll)


@contextlib.contextmanager
def running_world(root: Path, home: Path, setenv: Callable[[str, str], None]) -> Iterator[tuple[RealWorld, Any]]:
    """`write_real_world` plus the real search service serving the champion (so devops tools deploy through
    GitOps to it) and `challenger_wins_source` as `world.source`, for the run's A/B tests. `setenv` is pytest's
    monkeypatch.setenv, so every setting is restored after the test. Prometheus is pointed at a closed port: gates
    read `unknown` and training's budget fact is unknown, so the PDP asks for approval before training."""
    from autooptimizer.settings import get_settings
    from autooptimizer.testing import TinyService

    setenv("AUTOOPT_DATA_DIR", str(root / "data"))
    setenv("AUTOOPT_THREADS", "1")
    setenv("AUTOOPT_PROMETHEUS_URL", "http://127.0.0.1:9")
    get_settings.cache_clear()
    world = write_real_world(root, home)
    svc = TinyService(root, world.champion)
    setenv("AUTOOPT_SEARCH_PORT", str(svc.server.port))
    get_settings.cache_clear()
    world.source = challenger_wins_source(world.champion)
    try:
        yield world, svc
    finally:
        svc.stop()


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run an ASGI app with uvicorn on 127.0.0.1 and a free port (bound to 0) in a thread; yields its base URL."""
    import socket

    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 10
    while not server.started and time.time() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
