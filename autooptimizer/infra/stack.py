"""The local stack: a real Prometheus scraping the search service, started and stopped as one unit.

Used by `autoopt demo`, `autoopt bench gates`, the loop and the integration tests, so there is one implementation
of "start everything on free loopback ports, wait until Prometheus has scraped the service, stop all of it".

The service runs either in-process (uvicorn in a thread: fast, for tests and small corpora) or as a subprocess
(`python -m autooptimizer.infra.serve`: its own GIL, for the demo and benchmarks).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from autooptimizer.infra.net import free_port
from autooptimizer.infra.prometheus import InfraError, Prometheus, _terminate
from autooptimizer.profiles import Profile, load_profile


class UvicornThread:
    """Serve an ASGI app on 127.0.0.1:`port` from a daemon thread; `stop()` shuts it down gracefully."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        import uvicorn

        self.port = port or free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name=f"uvicorn-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> UvicornThread:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise InfraError(f"The in-process server on port {self.port} did not start.", "See the log above.")
            time.sleep(0.05)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)


class SubprocessService:
    """A service started as a child process; ready when GET `ready_path` answers 200."""

    def __init__(self, argv: list[str], port: int, log_path: Path, ready_path: str = "/metrics") -> None:
        self.argv, self.port, self.log_path, self.ready_path = argv, port, log_path, ready_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 600.0, env: dict[str, str] | None = None) -> SubprocessService:
        import httpx

        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
                env={**os.environ, **(env or {})},
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])
                raise InfraError(f"The service exited with code {self.proc.returncode}:\n{tail}", "Read the log.")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + self.ready_path, timeout=2).status_code == 200:
                    return self
            time.sleep(0.3)
        self.stop()
        raise InfraError(f"The service on port {self.port} was not ready in {timeout:.0f} s.", f"See {self.log_path}.")

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is not None:
            _terminate(self.proc.pid, timeout, self.proc)
            self.proc = None


class StackInfo(BaseModel):
    search_url: str
    prometheus_url: str
    root: str
    service_mode: str
    extra_targets: dict[str, list[str]] = Field(default_factory=dict)


class LocalStack:
    """Prometheus + the search service on free loopback ports.

    `service` is one of:
      - "process": run `python -m autooptimizer.infra.serve` with `serve_args` (datasets, model, ...);
      - "thread":  serve `app` (an ASGI app) or `app_factory()` in-process;
      - "external": only Prometheus, scraping `search_url` that someone else runs.
    """

    def __init__(
        self,
        *,
        service: Literal["process", "thread", "external"] = "process",
        app: Any = None,
        app_factory: Callable[[], Any] | None = None,
        serve_args: list[str] | None = None,
        search_url: str | None = None,
        profile: Profile | None = None,
        env: str | None = None,
        root: Path | None = None,
        extra_targets: dict[str, list[str]] | None = None,
        service_timeout: float = 900.0,
    ) -> None:
        from autooptimizer.settings import get_settings

        settings = get_settings()
        self.settings = settings
        self.profile = profile or load_profile(env or settings.env)
        self.mode = service
        self.app, self.app_factory, self.serve_args = app, app_factory, serve_args or []
        self.external_url = search_url
        self.root = Path(root) if root else settings.path("stack", "prometheus", "x").parent
        self.extra_targets = extra_targets or {}
        self.service_timeout = service_timeout
        self.service: UvicornThread | SubprocessService | None = None
        self.prometheus: Prometheus | None = None
        self._search_url: str | None = None

    @property
    def service_log(self) -> Path:
        """Where a subprocess service writes its output (embedding progress, errors)."""
        return self.root.parent / "search.log"

    @property
    def search_url(self) -> str:
        assert self._search_url, "stack not started"
        return self._search_url

    @property
    def prometheus_url(self) -> str:
        assert self.prometheus is not None, "stack not started"
        return self.prometheus.url

    def info(self) -> StackInfo:
        return StackInfo(search_url=self.search_url, prometheus_url=self.prometheus_url, root=str(self.root),
                         service_mode=self.mode, extra_targets=self.extra_targets)

    def start_service(self) -> str:
        if self.mode == "external":
            if not self.external_url:
                raise InfraError("An external stack needs search_url.", "Pass search_url=http://127.0.0.1:PORT.")
            self._search_url = self.external_url.rstrip("/")
        elif self.mode == "thread":
            app = self.app if self.app is not None else (self.app_factory() if self.app_factory else None)
            if app is None:
                raise InfraError("A thread stack needs an app or app_factory.", "Pass app= or app_factory=.")
            self.service = UvicornThread(app).start()
            self._search_url = self.service.url
        else:
            port = free_port()
            argv = [sys.executable, "-m", "autooptimizer.infra.serve", "--port", str(port), *self.serve_args]
            svc = SubprocessService(argv, port, self.service_log)
            self.service = svc
            svc.start(timeout=self.service_timeout)
            self._search_url = svc.url
        return self._search_url

    def start(self) -> LocalStack:
        """Start the service, then Prometheus scraping it; returns once Prometheus has a sample of it."""
        try:
            url = self.start_service()
            host_port = url.split("://", 1)[1]
            targets = {"search": [host_port], **self.extra_targets}
            self.prometheus = Prometheus(self.root, free_port(), targets, self.profile)
            self.prometheus.start(wait=True)
            self.prometheus.wait_for('up{job="search"} == 1', timeout=30)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop everything this stack started (safe to call twice, and after a failed start)."""
        errors = []
        for part in (self.prometheus, self.service):
            if part is None:
                continue
            try:
                part.stop()
            except Exception as exc:  # keep stopping the rest
                errors.append(exc)
        self.prometheus = None
        self.service = None
        if errors:
            raise errors[0]

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
