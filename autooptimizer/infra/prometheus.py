"""The real Prometheus (Debian `/usr/bin/prometheus`) on 127.0.0.1, with the config and gate rules this project writes.

Layout under `<root>` (default AUTOOPT_HOME/prometheus/):
    prometheus.yml                 scrape config: 1 s interval; jobs `search` and `optimizer`
    rules/autoopt-recording.yml    one recording rule per gate (same PromQL as autooptimizer.gates) and
                                   per per-version signal (autooptimizer.version_signals)
    rules/autoopt-alerts.yml       one alert per gate (fires with the gate)
    data/                          TSDB storage
    prometheus.log, prometheus.pid, state.json (url, port, pid, targets)

`Prometheus(...)` is a context manager for tests and the local stack; `up()` / `down()` / `status()` back
`autoopt infra up|down|status` and leave a detached server behind a pidfile.

PromQL (readiness, `wait_for`) and scrape targets are read through `autooptimizer.promql`, the project's one reader.
Only the admin endpoints the client has no method for are plain HTTP here: `GET /api/v1/rules` (`rules()`) and
`POST /-/reload` (the lifecycle API, `reload()`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field

from autooptimizer.errors import AutoOptError, ConfigError
from autooptimizer.infra.processes import pid_alive
from autooptimizer.profiles import Profile, load_profile
from autooptimizer.promql import active_targets, query

INSTALL_CMD = "apt-get install -y --no-install-recommends prometheus"
DEFAULT_BINARY = "/usr/bin/prometheus"
SCRAPE_INTERVAL = "1s"
# Where each job's exposition lives (the optimizer API serves its metrics under its versioned prefix).
METRICS_PATHS = {"search": "/metrics", "optimizer": "/api/v1/optimizer/metrics"}


class InfraError(AutoOptError):
    """Prometheus could not be started, found or stopped."""


def prometheus_binary(binary: str | None = None) -> str:
    """Path of the Prometheus binary, or an error that names the exact install command."""
    path = binary or os.environ.get("AUTOOPT_PROMETHEUS_BIN") or DEFAULT_BINARY
    if Path(path).is_file() and os.access(path, os.X_OK):
        return path
    found = shutil.which("prometheus")
    if binary is None and found:
        return found
    raise ConfigError(
        f"The Prometheus binary was not found at {path}.",
        f"Install it: {INSTALL_CMD} (after apt-get update), or set AUTOOPT_PROMETHEUS_BIN.",
    )


class PromState(BaseModel):
    """What `autoopt infra status` reports; written to state.json by `up`."""

    running: bool
    pid: int | None = None
    url: str
    port: int
    root: str
    targets: dict[str, list[str]] = Field(default_factory=dict)
    scrape_health: dict[str, str] = Field(default_factory=dict, description="target -> up|down|unknown")
    started_at: float | None = None


def rule_files(profile: Profile) -> dict[str, dict[str, Any]]:
    """Recording + alert rules for the four gates, from the same PromQL the gates evaluate (an alert also needs the
    gate's sample counts at their minimum, as the gate does), and recording rules for the per-version signals
    (`autooptimizer.version_signals`) the Grafana dashboard in deploy/grafana/ draws. The NDCG rule and alert are
    the sliding drop only: the gate's anchored comparison uses loop state (loop/anchor.py) that a rule file written
    at start-up cannot follow, so the gate reader makes it (gates.py, NDCG baselines) and the alert may stay silent
    while the gate fires on the anchor."""
    from autooptimizer.gates import gate_queries
    from autooptimizer.version_signals import version_signals

    queries = gate_queries(profile)
    recording = {
        "groups": [
            {
                "name": "autoopt-gates-recording",
                "interval": SCRAPE_INTERVAL,
                "rules": [{"record": q.record, "expr": q.promql} for q in queries],
            },
            {
                "name": "autoopt-version-signals",
                "interval": SCRAPE_INTERVAL,
                "rules": [{"record": s.record, "expr": s.promql} for s in version_signals(profile)],
            },
        ]
    }
    alerts = {
        "groups": [
            {
                "name": "autoopt-gates-alerts",
                "interval": SCRAPE_INTERVAL,
                "rules": [
                    {
                        "alert": q.alert,
                        "expr": q.alert_expr,
                        "labels": {"severity": "page", "gate": q.name},
                        "annotations": {"summary": q.summary, "value": "{{ $value }}"},
                    }
                    for q in queries
                ],
            }
        ]
    }
    return {"autoopt-recording.yml": recording, "autoopt-alerts.yml": alerts}


def scrape_config(targets: dict[str, list[str]]) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL, "scrape_timeout": "1s"},
        "rule_files": ["rules/*.yml"],
        "scrape_configs": [
            {"job_name": job, "metrics_path": METRICS_PATHS.get(job, "/metrics"),
             "static_configs": [{"targets": list(addrs)}]}
            for job, addrs in targets.items()
        ],
    }


def default_targets() -> dict[str, list[str]]:
    """The search service and the optimizer API from settings."""
    from autooptimizer.settings import get_settings

    s = get_settings()
    return {"search": [f"{s.search_host}:{s.search_port}"], "optimizer": [f"127.0.0.1:{s.api_port}"]}


class Prometheus:
    """One Prometheus process on 127.0.0.1:`port`, storage and config under `root`."""

    def __init__(
        self,
        root: Path,
        port: int,
        targets: dict[str, list[str]],
        profile: Profile | None = None,
        binary: str | None = None,
    ) -> None:
        self.root = Path(root)
        self.port = port
        self.targets = targets
        self.profile = profile or load_profile("dev")
        self.binary = binary
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.root / "prometheus.yml"

    def write_config(self) -> Path:
        (self.root / "rules").mkdir(parents=True, exist_ok=True)
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(scrape_config(self.targets), sort_keys=False))
        for name, body in rule_files(self.profile).items():
            (self.root / "rules" / name).write_text(yaml.safe_dump(body, sort_keys=False, width=1000))
        return self.config_path

    def argv(self) -> list[str]:
        return [
            prometheus_binary(self.binary),
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.root / 'data'}",
            "--storage.tsdb.retention.time=7d",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
            "--rules.alert.resend-delay=1s",
            "--log.level=warn",
        ]

    def start(self, wait: bool = True, timeout: float = 30.0) -> Prometheus:
        """Write the config, start the binary (own session, so Ctrl-C reaches us first) and wait for a scrape."""
        argv = self.argv()  # checks the binary before writing anything
        self.write_config()
        log = (self.root / "prometheus.log").open("ab")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        if wait:
            try:
                self.wait_ready(timeout)
            except BaseException:
                self.stop()
                raise
        return self

    def _log_tail(self, n: int = 15) -> str:
        try:
            return "\n".join((self.root / "prometheus.log").read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def rules(self) -> list[dict[str, Any]]:
        """The loaded rule groups (`GET /api/v1/rules`: not PromQL, and prometheus-api-client has no call for it)."""
        import httpx

        r = httpx.get(self.url + "/api/v1/rules", timeout=2.0)
        r.raise_for_status()
        return list(r.json()["data"]["groups"])

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Poll until Prometheus answers and its first scrape has landed (`up` has a sample: ~5 s after start)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise InfraError(
                    f"Prometheus exited with code {self.proc.returncode} on port {self.port}:\n{self._log_tail()}",
                    "Read the log above; a busy port or a bad config are the usual causes.",
                )
            if query("up", self.url, timeout=2.0).samples:
                return
            time.sleep(0.2)
        raise InfraError(f"Prometheus on port {self.port} saw no scrape within {timeout:.0f} s.", "See prometheus.log.")

    def wait_for(self, promql: str, timeout: float = 30.0, predicate: Any = None) -> list[dict[str, Any]]:
        """Poll an instant query until it returns series (and `predicate(result)` holds); returns the result (the raw
        `data.result` list)."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            res = query(promql, self.url, timeout=2.0)
            last = res.raw if res.ok else res.error
            try:
                if res.ok and res.raw and (predicate is None or predicate(res.raw)):
                    return list(res.raw)
            except Exception as exc:  # a predicate that cannot read this answer yet: keep polling
                last = exc
            time.sleep(0.25)
        raise InfraError(f"{promql!r} did not hold within {timeout:.0f} s (last: {last!r}).", "Check the targets.")

    def reload(self) -> None:
        """Rewrite the config and ask Prometheus to reload it (targets or profile changed)."""
        import httpx

        self.write_config()
        httpx.post(self.url + "/-/reload", timeout=5.0).raise_for_status()

    def target_health(self) -> dict[str, str]:
        """`job/instance` -> up | down | unknown for each scraped target; {} when Prometheus cannot be read."""
        active = active_targets(self.url) or []
        return {f"{t['labels'].get('job')}/{t['labels'].get('instance')}": t.get("health", "unknown") for t in active}

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        _terminate(self.proc.pid, timeout, self.proc)
        self.proc = None

    def __enter__(self) -> Prometheus:
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _terminate(pid: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """SIGTERM, wait, then SIGKILL one process by id."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None:
            if proc.poll() is not None:
                return
        elif not pid_alive(pid):
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    if proc is not None:
        proc.wait(timeout=5)


# ---- the detached server behind `autoopt infra up|down|status` ----------------------------------------------------


def _root() -> Path:
    from autooptimizer.settings import get_settings

    return get_settings().path("prometheus", "prometheus.yml").parent


def _read_state(root: Path) -> dict[str, Any] | None:
    try:
        return json.loads((root / "state.json").read_text())
    except (OSError, ValueError):
        return None


def _owned_pid(root: Path) -> int | None:
    """The pid in the pidfile if that process is alive and is a Prometheus using our config."""
    try:
        pid = int((root / "prometheus.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    if "prometheus" not in cmdline or str(root / "prometheus.yml") not in cmdline or not pid_alive(pid):
        return None
    return pid


def up(
    port: int | None = None, env: str | None = None, targets: dict[str, list[str]] | None = None, timeout: float = 30
) -> PromState:
    """Start a detached Prometheus for the configured service and API (idempotent: reports a running one)."""
    from autooptimizer.settings import get_settings

    settings = get_settings()
    root = _root()
    existing = status()
    if existing.running:
        return existing
    profile = load_profile(env or settings.env)
    prom = Prometheus(root, port or settings.prometheus_port, targets or default_targets(), profile)
    prom.start(wait=True, timeout=timeout)
    assert prom.proc is not None
    state = PromState(
        running=True, pid=prom.proc.pid, url=prom.url, port=prom.port, root=str(root), targets=prom.targets,
        started_at=time.time(),
    )
    (root / "prometheus.pid").write_text(str(prom.proc.pid))
    (root / "state.json").write_text(state.model_dump_json(indent=2))
    prom.proc = None  # detached: `down` stops it by pid
    return status()


def status() -> PromState:
    from autooptimizer.settings import get_settings

    settings = get_settings()
    root = _root()
    saved = _read_state(root) or {}
    port = int(saved.get("port") or settings.prometheus_port)
    pid = _owned_pid(root)
    state = PromState(
        running=pid is not None, pid=pid, url=saved.get("url") or f"http://127.0.0.1:{port}", port=port,
        root=str(root), targets=saved.get("targets") or {}, started_at=saved.get("started_at") if pid else None,
    )
    if pid is not None:
        probe = Prometheus(root, port, state.targets)
        state.scrape_health = probe.target_health()
    return state


def down(timeout: float = 10.0) -> PromState:
    root = _root()
    pid = _owned_pid(root)
    if pid is not None:
        _terminate(pid, timeout)
    (root / "prometheus.pid").unlink(missing_ok=True)
    return status()
