"""Test worlds for the agents: the scripted in-memory world (`FakeWorld`, `demo_registry`, now in the package at
autooptimizer/testing/agent_world.py, because `autoopt bench agents` builds its scenarios from it), and a tiny REAL
world for end-to-end runs on the real tools (below)."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autooptimizer.testing.agent_world import FakeWorld, demo_registry

__all__ = ["FakeWorld", "demo_registry", "RealWorld", "write_real_world", "challenger_wins_source", "running_world",
           "serve"]


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
