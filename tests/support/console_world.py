"""A small real world for the console's browser tests: real state made by real cycles, served by a real
`python -m autooptimizer serve` (staging, with a token) beside a real Prometheus.

- data: the tiny original domain (`scifact`) and a tiny new one (`dom`); the search service (the real app in a
  uvicorn thread) over both, serving the bi-encoder champion `v1-parent` (also gold); cheap bm25 versions `v-b`,
  `v-c`, `v-bad`, `v-old1`; the service's feedback log filled as the simulator would (v1-parent on scifact, then dom);
- cycles run in this process, as `autoopt trigger` runs them (A/B tests and watches read a `SyntheticSource`, the
  package's own double for live traffic, so they decide at once):
    retrain    the full NDCG path on `dom`: diagnose (SHAP) -> augment -> train -> evaluate -> ... (its end depends
               on the tiny data: awaiting approval, or rejected offline)
    promote-b  challenger v-b: canary, A/B pass, promote -> needs approval (staging) -> awaiting_approval
    promote-c  challenger v-c: the same; a second pending promotion
    rollback   an operator deploys v-bad by a GitOps commit; the deploy_watch cycle sees it degrade, rolls back
- Prometheus scrapes the search service and `HostileExporter`, whose per-version feedback series carry a
  model_version label with markup (no real service could export one: version names are validated).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from autooptimizer.reliability.api_checks import ApiServer
from autooptimizer.testing import SyntheticSource

TOKEN = "console-test-token-5f1e9a"
CHAMPION = "v1-parent"
MARKUP_LABEL = '<img src=x onerror="window.__xss=1">v-evil'
MEANS = {CHAMPION: 0.4, "v-b": 0.85, "v-c": 0.8, "v-bad": 0.05}  # a trained challenger: DEFAULT_MEAN
DEFAULT_MEAN = 0.6


class ByVersionSource(SyntheticSource):
    """A SyntheticSource with a mean for any version not named (a freshly trained challenger's id is not known in
    advance)."""

    def __init__(self, means: dict[str, float], default: float = DEFAULT_MEAN, **kw: Any) -> None:
        super().__init__(means, **kw)
        self.default = default

    def samples(self, model_version: str, since: float, until: float | None = None) -> list[float]:
        if model_version not in self.means:
            self.means[model_version] = self.default
        return super().samples(model_version, since, until)


class HeldSource(SyntheticSource):
    """Holds every snapshot of `hold` until `release` is set (so a test can act while a cycle waits inside a step);
    `entered` is set when the first one arrives."""

    def __init__(self, means: dict[str, float], hold: str, **kw: Any) -> None:
        super().__init__(means, **kw)
        self.hold, self.release, self.entered = hold, threading.Event(), threading.Event()

    def snapshot(self, model_version: str, since: float) -> Any:
        if model_version == self.hold:
            self.entered.set()
            if not self.release.wait(180):
                raise TimeoutError("the test never released the held source")
        return super().snapshot(model_version, since)


class HostileExporter:
    """Prometheus text exposition with growing per-version feedback counters: one ordinary version and one whose
    label is markup. Served on a loopback port for the real Prometheus to scrape."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        started = time.time()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                n = max(1.0, (time.time() - started) * 10)
                lines = ["# TYPE autoopt_feedback_ndcg10 summary"]
                for label, mean in (("v-normal", 0.7), (MARKUP_LABEL, 0.3)):
                    esc = label.replace("\\", "\\\\").replace('"', '\\"')
                    lines += [f'autoopt_feedback_ndcg10_sum{{model_version="{esc}"}} {n * mean}',
                              f'autoopt_feedback_ndcg10_count{{model_version="{esc}"}} {n}']
                body = ("\n".join(lines) + "\n").encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class ConsoleServer(ApiServer):
    """`python -m autooptimizer serve` in staging on the world's home, Prometheus and search service."""

    def __init__(self, root: Path, *, env: dict[str, str]) -> None:
        super().__init__(root, token=TOKEN)
        self.extra = env

    def _env(self) -> dict[str, str]:
        return {**super()._env(), **self.extra}


@dataclass
class World:
    root: Path
    env: dict[str, str]
    profile: Any
    service: Any = None
    prometheus: Any = None
    exporter: HostileExporter | None = None
    server: ConsoleServer | None = None
    cycles: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    @property
    def home(self) -> Path:
        return self.root / "home"


def _profile(profiles: Path) -> Any:
    """The packaged staging profile with the scheduler off, mock signals on (cycles run by `gate`), and a retrain
    minimum the tiny `dom` can meet (its feedback half holds 10 judged queries; staging asks for 40)."""
    import autooptimizer.profiles as profiles_pkg
    from autooptimizer.profiles import Profile

    raw = yaml.safe_load((Path(profiles_pkg.__file__).parent / "staging.yaml").read_text())
    raw["loop"].update({"scheduler": False, "mockSignals": True, "watchWindowSeconds": 2})
    raw["retrain"] = {"minNewFeedback": 10}
    profiles.mkdir(parents=True, exist_ok=True)
    (profiles / "staging.yaml").write_text(yaml.safe_dump(raw))
    return Profile.model_validate(raw)


def _feedback(data: Path, tmp: Path, log: Path) -> None:
    """The service's feedback log as the simulator fills it: SciFact-like traffic, then every judged `dom` query."""
    from autooptimizer.ml.evaluate import load_split
    from autooptimizer.ml.feedback import simulate_feedback
    from autooptimizer.search import model_store

    spec = model_store.load(CHAMPION)
    lines = []
    for name, split in (("scifact", "train"), ("dom", None)):
        collection, queries, qrels = load_split(data / name, split)
        out = simulate_feedback(spec, collection, queries, qrels, tmp / f"{name}.jsonl", dataset=name)
        for line in out.read_text().splitlines():
            rec = json.loads(line)
            lines.append({**rec, "query_id": f"{name}/{rec['query_id']}", "dataset": None})
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("".join(json.dumps(r) + "\n" for r in lines))


def apply_env(env: dict[str, str]) -> None:
    """Point this process's settings and policies at the world."""
    from autooptimizer.policies.pdp import reload_policies
    from autooptimizer.settings import get_settings

    os.environ.update(env)
    get_settings.cache_clear()
    reload_policies()


def run_cycle(world: World, source: Any = None, **options: Any) -> Any:
    from autooptimizer.loop.cycle import CycleOptions, CycleRunner

    runner = CycleRunner(profile=world.profile, source=source or ByVersionSource(dict(MEANS)))
    return runner.run(CycleOptions(trigger="test", **options))


def _data_and_service(world: World) -> None:
    """Datasets, model versions, the feedback log, and the search service serving the champion."""
    from autooptimizer.infra.stack import UvicornThread
    from autooptimizer.search import aliases, model_store
    from autooptimizer.search.app import SearchService, create_app
    from autooptimizer.search.beir import load_collection
    from autooptimizer.search.model_store import ModelSpec
    from autooptimizer.search.sample_data import write_tiny_domain, write_tiny_original
    from autooptimizer.settings import get_settings
    from autooptimizer.testing import make_versions

    data = world.root / "data"
    write_tiny_original(data / "scifact")
    write_tiny_domain(data / "dom")
    model_store.save(ModelSpec(version=CHAMPION, kind="bi_encoder", fusion_weight=0.6, rerank_depth=20))
    aliases.set_alias(aliases.CHAMPION, CHAMPION)
    aliases.set_alias(aliases.GOLD, CHAMPION)
    make_versions(["v-b", "v-c", "v-bad", "v-old1"])  # v-old1: never served, a chat may delete it
    _feedback(data, world.root / "sim", get_settings().feedback_log)
    service = SearchService(load_collection([str(data / "scifact"), str(data / "dom")]), CHAMPION)
    world.service = UvicornThread(create_app(service)).start()
    world.env["AUTOOPT_SEARCH_PORT"] = str(world.service.port)
    apply_env(world.env)


def _cycles(world: World) -> None:
    """The cycles whose state the pages show (see the module doc)."""
    from autooptimizer.loop.gitops import HelmPatch
    from autooptimizer.loop.release import Release

    Release().current()  # adopt the serving state as the GitOps baseline
    world.cycles["retrain"] = run_cycle(world, gate="ndcg_drop", domain_data="dom")
    world.cycles["promote-b"] = run_cycle(world, gate="ndcg_drop", challenger="v-b")
    world.cycles["promote-c"] = run_cycle(world, gate="ndcg_drop", challenger="v-c")
    Release().deploy(HelmPatch(model_version="v-bad", replicas=1), "operator: try v-bad")
    world.cycles["rollback"] = run_cycle(world, gate="deploy_watch", watch_seconds=2)


@contextmanager
def console_world(root: Path) -> Iterator[World]:
    """Build the world under `root`, start Prometheus and the server; stop all of it on exit and restore env."""
    from autooptimizer.infra.net import free_port
    from autooptimizer.infra.prometheus import Prometheus

    saved = {k: v for k, v in os.environ.items() if k.startswith("AUTOOPT_")}
    profiles = root / "profiles"
    env = {"AUTOOPT_HOME": str(root / "home"), "AUTOOPT_ENV": "staging", "AUTOOPT_PROFILES_DIR": str(profiles),
           "AUTOOPT_DATA_DIR": str(root / "data"), "AUTOOPT_THREADS": "1", "AUTOOPT_API_TOKEN": TOKEN}
    world = World(root=root, env=env, profile=_profile(profiles))
    for k in [k for k in os.environ if k.startswith("AUTOOPT_")]:
        del os.environ[k]
    try:
        world.exporter = HostileExporter()
        prom_port = free_port()
        env["AUTOOPT_PROMETHEUS_URL"] = f"http://127.0.0.1:{prom_port}"
        apply_env(env)
        _data_and_service(world)
        world.prometheus = Prometheus(root / "prometheus", prom_port,
                                      {"search": [f"127.0.0.1:{world.service.port}"],
                                       "hostile": [world.exporter.address]}, world.profile).start(wait=True)
        world.prometheus.wait_for('sum(autoopt_cost_dollars_total) >= 0', timeout=30)  # spend known: training may run
        _cycles(world)
        world.server = ConsoleServer(root / "server", env=env)
        world.server.home = root / "home"
        world.server.start()
        yield world
    finally:
        for part in (world.server, world.prometheus, world.service):
            if part is not None:
                part.stop()
        if world.exporter is not None:
            world.exporter.close()
        for k in [k for k in os.environ if k.startswith("AUTOOPT_")]:
            del os.environ[k]
        os.environ.update(saved)
        apply_env({})
