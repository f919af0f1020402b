"""The optimizer's REST API under fuzz (Schemathesis) and under load (50 httpx clients), as figures.

Both run the real server, `python -m autooptimizer serve` (what `autoopt serve` runs) as a child process on a loopback
port, with its own AUTOOPT_HOME, no Prometheus (every gate reads `unknown`) and the dev profile with `mockSignals`
off (an operator's copy under AUTOOPT_PROFILES_DIR): a triggered cycle then ends `no_action` in about 0.1 s, so
hundreds of triggers cost nothing while still taking the cycle lock and writing the journal and the audit log.

`run_api_fuzz` sends every operation of the server's own OpenAPI schema Schemathesis-generated requests (valid and
invalid), each write three times: without a token, with a wrong one, with the right one; then again against a
server with no token configured. `run_api_load` runs `clients` concurrent clients for `seconds`: reads, triggers,
approve/deny of real pending requests and kill-switch flips, then reconciles every accepted write with the journal,
the approvals store and the audit log. Schemathesis and Hypothesis are imported inside the functions (dev extra).
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Literal, cast

import yaml
from pydantic import BaseModel, Field, computed_field

from autooptimizer.errors import InputError
from autooptimizer.infra.net import free_port
from autooptimizer.settings import OFFLINE_ENV, Settings

API = "/api/v1/optimizer"
TOKEN = "fault-suite-token"
WRITES = {"POST", "PUT", "PATCH", "DELETE"}
TRACEBACK = "Traceback (most recent call last)"
MAX_FINDINGS = 25
_KEEP_ENV = {"AUTOOPT_DATA_DIR", "AUTOOPT_THREADS"}


# -- the server under test ---------------------------------------------------------------------------------------
class ApiServer:
    """`python -m autooptimizer serve` in a fresh AUTOOPT_HOME under `root`, with `token` (None: no token set).

    The child's environment is built, not inherited: no AUTOOPT_* setting of the caller leaks in (a stray
    AUTOOPT_API_TOKEN would turn the no-token server into a token server)."""

    def __init__(self, root: Path, *, token: str | None) -> None:
        self.root, self.token = Path(root), token
        self.home = self.root / "home"
        self.port = free_port()
        self.log_path = self.root / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _env(self) -> dict[str, str]:
        import autooptimizer

        profiles = self.root / "profiles"
        write_quiet_profile(profiles)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOOPT_") or k in _KEEP_ENV}
        package_root = str(Path(autooptimizer.__file__).resolve().parents[1])
        env.update(OFFLINE_ENV)
        env.update({"AUTOOPT_HOME": str(self.home), "AUTOOPT_ENV": "dev", "AUTOOPT_PROFILES_DIR": str(profiles),
                    "AUTOOPT_PROMETHEUS_URL": f"http://127.0.0.1:{free_port()}",  # nothing listens: gates unknown
                    "AUTOOPT_SEARCH_PORT": str(free_port()), "LANGSMITH_TRACING": "false",
                    "PYTHONPATH": os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)})
        if self.token:
            env["AUTOOPT_API_TOKEN"] = self.token
        return env

    def start(self, timeout: float = 90.0) -> ApiServer:
        import httpx

        from autooptimizer.infra.prometheus import InfraError

        self.root.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "autooptimizer", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=self._env(),
                                         cwd=self.root, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise InfraError(f"`autoopt serve` exited with code {self.proc.returncode}:\n{self.log_tail()}",
                                 f"Read {self.log_path}.")
            with suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}{API}/kill-switch", timeout=2).status_code == 200:
                    return self
            time.sleep(0.2)
        self.stop()
        raise InfraError(f"`autoopt serve` did not answer in {timeout:.0f} s.", f"Read {self.log_path}.")

    def stop(self, timeout: float = 15.0) -> None:
        from autooptimizer.infra.prometheus import _terminate

        if self.proc is not None:
            _terminate(self.proc.pid, timeout, self.proc)
            self.proc = None

    def log_tail(self, lines: int = 20) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def tracebacks(self) -> int:
        """Unhandled exceptions the server logged (request handlers and background cycle threads alike)."""
        return self.log_path.read_text(errors="replace").count(TRACEBACK) if self.log_path.exists() else 0

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Wait until the server says no cycle runs (GET /status `is_running`); False on timeout."""
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with suppress(httpx.HTTPError):
                if not httpx.get(f"{self.url}{API}/status", timeout=10).json()["is_running"]:
                    return True
            time.sleep(0.1)
        return False

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def write_quiet_profile(directory: Path) -> Path:
    """The packaged dev profile with mock signals and the scheduler off: a cycle only acts on a firing gate, and
    with no Prometheus none fires, so every cycle ends `no_action` (cheap, and it still journals and audits)."""
    import autooptimizer.profiles as profiles
    from autooptimizer.profiles import Profile

    raw = yaml.safe_load((Path(profiles.__file__).parent / "dev.yaml").read_text())  # the packaged one
    raw.setdefault("loop", {}).update({"mockSignals": False, "scheduler": False})
    Profile.model_validate(raw)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "dev.yaml"
    path.write_text("# Fault suite: dev with mock signals and the scheduler off.\n" + yaml.safe_dump(raw))
    return path


@contextmanager
def _workdir(root: Path | None) -> Iterator[Path]:
    if root is not None:
        Path(root).mkdir(parents=True, exist_ok=True)
        yield Path(root)
        return
    with tempfile.TemporaryDirectory(prefix="autoopt-api-checks-") as tmp:
        yield Path(tmp)


@contextmanager
def _as_home(home: Path) -> Iterator[None]:
    """Point this process's settings at the server's AUTOOPT_HOME (the approvals store audits into that home)."""
    from autooptimizer.settings import get_settings

    old = os.environ.get("AUTOOPT_HOME")
    os.environ["AUTOOPT_HOME"] = str(home)
    get_settings.cache_clear()
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("AUTOOPT_HOME", None)
        else:
            os.environ["AUTOOPT_HOME"] = old
        get_settings.cache_clear()


def _journal(home: Path) -> list[Any]:
    from autooptimizer.loop.journal import Journal

    return sorted(Journal(Settings(home=home)).list(limit=1_000_000), key=lambda c: c.started_at)


def _overlaps(cycles: list[Any]) -> int:
    """Cycles that started before the one before them finished (by the journal's own timestamps)."""
    return sum(1 for a, b in zip(cycles, cycles[1:], strict=False)
               if a.finished_at is None or a.finished_at > b.started_at)


# -- fuzz ----------------------------------------------------------------------------------------------------------
Auth = Literal["none", "wrong", "token", "n/a"]


class FuzzFinding(BaseModel):
    server: Literal["token", "no_token"]
    operation: str
    mode: str
    auth: Auth
    status: int | None
    problem: str
    curl: str = ""


class FuzzResult(BaseModel):
    """Figures of one fuzz run; `ok` when every must-be-zero figure is zero."""

    operations: int = Field(default=0, description="operations in the server's OpenAPI schema")
    cases: int = Field(default=0, description="generated cases (valid and invalid)")
    requests: int = Field(default=0, description="HTTP requests sent: a write case goes once per auth variant")
    edge_cases: int = Field(default=0, description="hand-written hostile requests (EDGE_BODIES, EDGE_READS) sent")
    server_errors: int = Field(default=0, description="5xx answers or dropped connections (must be 0)")
    unhandled_exceptions: int = Field(default=0, description="tracebacks in the servers' logs (must be 0)")
    writes_accepted_without_token: int = Field(default=0, description="2xx to a write with no/wrong token (must be 0)")
    wrong_auth_status: int = Field(default=0, description="refused writes answered other than 401/403 (must be 0)")
    read_failures: int = Field(default=0,
                               description="valid reads not answered 200 (404 for an unknown id) (must be 0)")
    unexpected_status: int = Field(default=0,
                                   description="valid authorised writes with an undocumented outcome (must be 0)")
    schema_violations: int = Field(default=0, description="answers outside the OpenAPI schema (must be 0)")
    triggers_accepted: int = 0
    cycles_journaled: int = 0
    seconds: float = 0.0
    max_examples: int = 0
    no_invalid_input: list[str] = Field(default_factory=list, description="operations with no invalid input to "
                                        "generate (no parameters, or a free-form string): fuzzed with valid input only")
    findings: list[FuzzFinding] = Field(default_factory=list)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ok(self) -> bool:
        bad = (self.server_errors, self.unhandled_exceptions, self.writes_accepted_without_token,
               self.wrong_auth_status, self.read_failures, self.unexpected_status, self.schema_violations)
        return self.cases > 0 and not any(bad) and self.triggers_accepted == self.cycles_journaled


# What a valid, authorised request may be answered: anything else is a finding.
_VALID_WRITE = {"/trigger": {202, 409}, "/approvals/{request_id}/approve": {200, 404, 409},
                "/approvals/{request_id}/deny": {200, 404, 409}, "/kill-switch/on": {200}, "/kill-switch/off": {200}}
_VALID_READ = {"/cycles/{cycle_id}": {200, 404}}


class _Fuzzer:
    def __init__(self, result: FuzzResult, server: ApiServer, *, label: Literal["token", "no_token"]) -> None:
        import requests

        self.r, self.server = result, server
        self.label: Literal["token", "no_token"] = label
        self.session = requests.Session()

    def finding(self, case: Any, mode: str, auth: Auth, status: int | None, problem: str) -> None:
        if len(self.r.findings) >= MAX_FINDINGS:
            return
        curl = ""
        with suppress(Exception):  # reproduction text only; a case it cannot render is still a finding
            curl = case.as_curl_command()[:400]
        self.r.findings.append(FuzzFinding(server=self.label, operation=f"{case.method.upper()} {case.path}",
                                           mode=mode, auth=auth, status=status, problem=problem[:400], curl=curl))

    def variants(self, method: str) -> list[tuple[Auth, dict[str, str]]]:
        if method.upper() not in WRITES:
            return [("n/a", {})]
        out: list[tuple[Auth, dict[str, str]]] = [("none", {}), ("wrong", {"Authorization": f"Bearer not-{TOKEN}"})]
        out.append(("token", {"Authorization": f"Bearer {TOKEN}"}))
        return out

    def run_case(self, case: Any, mode: str) -> None:
        import requests

        self.r.cases += 1
        for auth, headers in self.variants(case.method):
            self.r.requests += 1
            # Built by hand, not `case.call`: Schemathesis' negative mode drops any Authorization header we pass.
            data = case.as_transport_kwargs(base_url=self.server.url)
            data["headers"] = {**{k: v for k, v in (data.get("headers") or {}).items()
                                  if k.lower() != "authorization"}, **headers}
            data.setdefault("timeout", 15)
            try:
                resp = self.session.request(**data)
            except requests.RequestException as exc:
                self.r.server_errors += 1
                self.finding(case, mode, auth, None, f"no answer: {type(exc).__name__}: {exc}")
                continue
            self.judge(case, mode, auth, resp.status_code, resp.text)
            self.conform(case, mode, auth, resp, headers)

    def judge(self, case: Any, mode: str, auth: Auth, status: int, text: str) -> None:
        write = case.method.upper() in WRITES
        path = case.operation.path.removeprefix(API)
        if status >= 500:
            self.r.server_errors += 1
            return self.finding(case, mode, auth, status, f"server error: {text[:300]}")
        if write and status == 202 and path == "/trigger":
            self.r.triggers_accepted += 1
        refused = write and (auth in ("none", "wrong") or self.label == "no_token")
        if refused:
            if 200 <= status < 300:
                self.r.writes_accepted_without_token += 1
                return self.finding(case, mode, auth, status, "a write was accepted without the right token")
            want = 401 if auth == "none" else 403
            if status != want:
                self.r.wrong_auth_status += 1
                return self.finding(case, mode, auth, status, f"refused write answered {status}, expected {want}")
            return None
        if mode != "positive":
            return None
        allowed = _VALID_WRITE.get(path, {200}) if write else _VALID_READ.get(path, {200})
        if status not in allowed:
            if write:
                self.r.unexpected_status += 1
            else:
                self.r.read_failures += 1
            self.finding(case, mode, auth, status, f"valid request answered {status}, expected {sorted(allowed)}: "
                         f"{text[:200]}")
        return None

    def conform(self, case: Any, mode: str, auth: Auth, resp: Any, headers: dict[str, str]) -> None:
        from schemathesis.specs.openapi.checks import (
            content_type_conformance,
            response_schema_conformance,
            status_code_conformance,
        )

        try:
            case.validate_response(resp, headers=headers, checks=[status_code_conformance, content_type_conformance,
                                                                   response_schema_conformance])
        except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - a failed check is a finding, not a crash
            self.r.schema_violations += 1
            self.finding(case, mode, auth, resp.status_code, f"schema: {str(exc).strip()[:300]}")


# Inputs generators rarely produce but that broke (or could break) the API: raw request bodies sent to every write.
# A lone surrogate once turned FastAPI's 422 into a 500 (the error echoed the input and could not be encoded).
EDGE_BODIES: dict[str, bytes] = {
    "lone surrogate": b'{"note": "\\ud800x", "reason": "\\udfff", "challenger": "\\ud800"}',
    "NUL in text": b'{"note": "a\\u0000b", "reason": "a\\u0000b"}',
    "invalid UTF-8": b'{"note": "\xff\xfe"}',
    "deep nesting": b"[" * 100_000 + b"]" * 100_000,
    "2 MB strings": b'{"note": "%s", "reason": "%s", "challenger": "%s"}' % ((b"x" * 2_000_000,) * 3),
    "not JSON": b"{'note': 1",
    "JSON null": b"null",
}
EDGE_READS = [f"{API}/history?limit=1e309", f"{API}/history?limit=-1", f"{API}/approvals?status=%ED%A0%80",
              f"{API}/cycles/%00", f"{API}/cycles/{'x' * 5000}", f"{API}/cycles/..%2F..%2Fetc%2Fpasswd"]


def _edge_cases(result: FuzzResult, server: ApiServer, label: Literal["token", "no_token"], writes: list[str]) -> None:
    """Each edge body to each write (no token, then the token); odd paths and queries to the reads."""
    import httpx

    def judge(what: str, method: str, url: str, auth: Auth, resp: httpx.Response | None) -> None:
        result.edge_cases += 1
        status = None if resp is None else resp.status_code
        result.triggers_accepted += status == 202 and url.endswith("/trigger")
        finding = FuzzFinding(server=label, operation=f"{method} {url}", mode=f"edge: {what}", auth=auth,
                              status=status, problem="")
        refused = method in WRITES and (auth == "none" or label == "no_token")
        if status is None or status >= 500:
            result.server_errors += 1
            finding.problem = "server error or no answer"
        elif refused and status != (401 if auth == "none" else 403):
            result.wrong_auth_status += 1
            finding.problem = f"refused write answered {status}"
        elif not refused and method in WRITES and 200 <= status < 300 and what not in ("NUL in text", "JSON null"):
            result.unexpected_status += 1
            finding.problem = f"malformed body accepted ({status})"
        if finding.problem and len(result.findings) < MAX_FINDINGS:
            result.findings.append(finding)

    with httpx.Client(base_url=server.url, timeout=30) as http:
        for path in writes:
            for what, body in EDGE_BODIES.items():
                variants: tuple[tuple[Auth, dict[str, str]], ...] = (
                    ("none", {}), ("token", {"Authorization": f"Bearer {TOKEN}"}))
                for auth, headers in variants:
                    try:
                        resp = http.post(path, content=body, headers={**headers, "Content-Type": "application/json"})
                    except httpx.HTTPError:
                        resp = None
                    judge(what, "POST", path, auth, resp)
        for url in EDGE_READS:
            try:
                resp = http.get(url)
            except httpx.HTTPError:
                resp = None
            judge("odd path or query", "GET", url, "n/a", resp)


def _fuzz_operation(fuzzer: _Fuzzer, op: Any, mode: Any, *, max_examples: int, seed: int) -> None:
    """`max_examples` Hypothesis examples of one operation in one generation mode (no shrinking: findings are
    collected, not raised)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed

    @hseed(seed)
    @settings(max_examples=max_examples, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
              # the cast: HealthCheck's metaclass __iter__ (it skips deprecated checks) has no annotation
              suppress_health_check=cast("list[HealthCheck]", list(HealthCheck)))
    @given(case=op.as_strategy(generation_mode=mode))
    def fuzz(case: Any) -> None:
        fuzzer.run_case(case, mode.value)

    fuzz()


def _fuzz_server(result: FuzzResult, server: ApiServer, label: Literal["token", "no_token"], *, max_examples: int,
                 seed: int) -> None:
    import schemathesis
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis.core.result import Err
    from schemathesis.schemas import APIOperation

    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json", timeout=30)
    fuzzer = _Fuzzer(result, server, label=label)
    ops: list[APIOperation] = []
    for r in schema.get_all_operations():
        if isinstance(r, Err):
            raise r.err()  # InvalidSchema: the operation the server's OpenAPI document does not describe validly
        ops.append(r.ok())
    result.operations = max(result.operations, len(ops))
    writes = [op.path.replace("{request_id}", "apr-000000000000") for op in ops if op.method.upper() in WRITES]
    _edge_cases(result, server, label, writes)
    for op in ops:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _fuzz_operation(fuzzer, op, mode, max_examples=max_examples, seed=seed)
            except Unsatisfiable:  # negative mode of an operation every input is valid for (GET /status, /cycles/x)
                name = f"{op.method.upper()} {op.path}"
                if name not in result.no_invalid_input:
                    result.no_invalid_input.append(name)
    server.wait_idle()


def run_api_fuzz(*, max_examples: int = 25, seed: int = 0, root: Path | None = None) -> FuzzResult:
    """Fuzz the real server's whole OpenAPI schema, with its token and then with none configured (see module doc).

    Cost: about operations x 2 modes x max_examples cases (x 1.5: the no-token server gets half), writes sent 3
    times; about 15 s at 25 on 2 cores."""
    if max_examples < 1:
        raise InputError(f"max_examples must be >= 1, got {max_examples}.", "Pass e.g. max_examples=25.")
    t0 = time.monotonic()
    result = FuzzResult(max_examples=max_examples)
    with _workdir(root) as work:
        with ApiServer(work / "token", token=TOKEN) as server:
            _fuzz_server(result, server, "token", max_examples=max_examples, seed=seed)
        result.cycles_journaled = len(_journal(server.home))
        result.unhandled_exceptions += server.tracebacks()
        with ApiServer(work / "no-token", token=None) as bare:
            _fuzz_server(result, bare, "no_token", max_examples=max(1, max_examples // 2), seed=seed)
        result.cycles_journaled += len(_journal(bare.home))
        result.unhandled_exceptions += bare.tracebacks()
    result.seconds = round(time.monotonic() - t0, 1)
    return result


# -- load ----------------------------------------------------------------------------------------------------------
Kind = Literal["status", "history", "metrics", "approvals", "kill_state", "trigger", "decide", "flip"]
READS: tuple[Kind, ...] = ("status", "history", "metrics", "approvals", "kill_state")
# The mix: ~60% reads, the rest writes (weights per request kind).
MIX: dict[Kind, float] = {"status": 12, "history": 12, "metrics": 12, "approvals": 12, "kill_state": 12,
                          "trigger": 16, "decide": 14, "flip": 10}


class _Call(BaseModel):
    kind: Kind
    status: int | None  # None: timeout or dropped connection
    ms: float
    sent: float  # wall clock (time.time()), comparable with the journal's timestamps: same machine
    answered: float
    target: str | None = None  # the approval id, or the flip's direction
    error: str | None = None


class LoadResult(BaseModel):
    """Figures of one load run; `ok` when every must-be-zero figure is zero."""

    clients: int
    seconds: float
    requests: int = 0
    requests_per_second: float = 0.0
    reads: int = 0
    read_errors: int = Field(default=0, description="reads answered non-2xx, timed out or dropped (must be 0)")
    read_p50_ms: float = 0.0
    read_p95_ms: float = 0.0
    read_max_ms: float = 0.0
    write_errors: int = Field(default=0, description="writes timed out, dropped or answered outside their contract "
                              "(must be 0)")
    server_errors: int = Field(default=0, description="5xx answers (must be 0)")
    unhandled_exceptions: int = Field(default=0, description="tracebacks in the server log (must be 0)")
    triggers_sent: int = 0
    triggers_accepted: int = Field(default=0, description="202 answers")
    triggers_busy: int = Field(default=0, description="409 answers: a cycle was running")
    busy_outside_cycles: int = Field(default=0,
                                     description="409 answers sent and received more than 1 s away from every "
                                     "journaled cycle (informative: a stalled server can hold the lock that long "
                                     "around a cycle)")
    cycles_journaled: int = 0
    overlapping_cycles: int = Field(default=0, description="cycles that ran at the same time (must be 0)")
    cycles_left_running: int = 0
    approvals_created: int = 0
    approval_decisions_accepted: int = 0
    approval_decisions_refused: int = Field(default=0, description="409: the request was already decided")
    kill_switch_flips: int = 0
    kill_switch_audit_records: int = 0
    audit_records: int = 0
    audit_ok: bool = False
    lost_updates: int = Field(default=0, description="accepted writes the journal, approvals store or audit log do not "
                              "show exactly once, plus the reverse (must be 0)")
    problems: list[str] = Field(default_factory=list)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ok(self) -> bool:
        bad = (self.read_errors, self.write_errors, self.server_errors, self.unhandled_exceptions,
               self.overlapping_cycles, self.cycles_left_running, self.lost_updates)
        return self.requests > 0 and not any(bad) and self.audit_ok


_WRITE_OK: dict[Kind, set[int]] = {"trigger": {202, 409}, "decide": {200, 409}, "flip": {200}}


def _seed_approvals(home: Path, n: int) -> list[str]:
    """`n` real pending requests (scale_service: not a promotion, so an approved one never steers a cycle)."""
    from autooptimizer.policies.approvals import ApprovalStore

    with _as_home(home):
        store = ApprovalStore()
        return [store.request(tool="scale_service", agent="devops", env="dev", args={"replicas": 2 + i % 6, "i": i},
                              reason="fault suite: load", policies=["fault-suite"], requested_by="fault-suite").id
                for i in range(n)]


# A client's wait for one answer. The check is that nothing is lost, not a latency bound: on the shared 2-core box,
# 50 clients and a running cycle once kept a pending-approvals read waiting past 10 s (CI, 2026-11-30).
CLIENT_TIMEOUT_S = 30.0


async def _client(url: str, rng: random.Random, deadline: float, ids: list[str], calls: list[_Call]) -> None:
    import httpx

    auth = {"Authorization": f"Bearer {TOKEN}"}
    kinds, weights = list(MIX), list(MIX.values())
    reads = {"status": "/status", "history": "/history?limit=50", "metrics": "/metrics",
             "approvals": "/approvals?status=pending", "kill_state": "/kill-switch"}
    async with httpx.AsyncClient(base_url=url + API, timeout=CLIENT_TIMEOUT_S) as http:
        while time.monotonic() < deadline:
            kind: Kind = rng.choices(kinds, weights)[0]
            target = None
            t0, sent = time.perf_counter(), time.time()
            try:
                if kind in reads:
                    resp = await http.get(reads[kind])
                elif kind == "trigger":
                    resp = await http.post("/trigger", json={}, headers=auth)
                elif kind == "decide":
                    target = rng.choice(ids)
                    verb = rng.choice(["approve", "deny"])
                    resp = await http.post(f"/approvals/{target}/{verb}", json={"note": "load"}, headers=auth)
                    target = f"{target}:{verb}"
                else:
                    target = rng.choice(["on", "off"])
                    resp = await http.post(f"/kill-switch/{target}", json={"reason": "load"}, headers=auth)
                calls.append(_Call(kind=kind, status=resp.status_code, ms=(time.perf_counter() - t0) * 1e3,
                                   sent=sent, answered=time.time(), target=target))
            except httpx.HTTPError as exc:
                calls.append(_Call(kind=kind, status=None, ms=(time.perf_counter() - t0) * 1e3, sent=sent,
                                   answered=time.time(), target=target, error=f"{type(exc).__name__}: {exc}"[:200]))


async def _drive(url: str, clients: int, seconds: float, ids: list[str], seed: int) -> list[_Call]:
    calls: list[_Call] = []
    deadline = time.monotonic() + seconds
    await asyncio.gather(*(_client(url, random.Random(seed * 1000 + i), deadline, ids, calls)
                           for i in range(clients)))
    return calls


def _percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, max(0, int(-(-q * len(ordered) // 100)) - 1))], 1)


def _count_calls(r: LoadResult, calls: list[_Call]) -> None:
    reads = [c for c in calls if c.kind in READS]
    r.requests, r.reads = len(calls), len(reads)
    r.requests_per_second = round(len(calls) / r.seconds, 1) if r.seconds else 0.0
    r.read_errors = sum(1 for c in reads if c.status is None or not 200 <= c.status < 300)
    lat = [c.ms for c in reads if c.status is not None]
    r.read_p50_ms, r.read_p95_ms = _percentile(lat, 50), _percentile(lat, 95)
    r.read_max_ms = round(max(lat, default=0.0), 1)
    r.server_errors = sum(1 for c in calls if c.status is not None and c.status >= 500)
    r.write_errors = sum(1 for c in calls if c.kind in _WRITE_OK and c.status not in _WRITE_OK[c.kind])
    for c in calls:
        if (c.status is None or c.status >= 500 or (c.kind in _WRITE_OK and c.status not in _WRITE_OK[c.kind])) \
                and len(r.problems) < MAX_FINDINGS:
            r.problems.append(f"{c.kind} {c.target or ''} -> {c.status} {c.error or ''}".strip())
    triggers = [c for c in calls if c.kind == "trigger"]
    r.triggers_sent = len(triggers)
    r.triggers_accepted = sum(1 for c in triggers if c.status == 202)
    r.triggers_busy = sum(1 for c in triggers if c.status == 409)
    r.approval_decisions_accepted = sum(1 for c in calls if c.kind == "decide" and c.status == 200)
    r.approval_decisions_refused = sum(1 for c in calls if c.kind == "decide" and c.status == 409)
    r.kill_switch_flips = sum(1 for c in calls if c.kind == "flip" and c.status == 200)


def _reconcile(r: LoadResult, calls: list[_Call], home: Path, ids: list[str]) -> None:
    """Every accepted write shows exactly once where it must, and nothing shows that was not accepted."""
    from autooptimizer.policies.approvals import ApprovalStore
    from autooptimizer.policies.audit import AuditLog
    from autooptimizer.policies.killswitch import KillSwitch

    lost: list[str] = []
    cycles = _journal(home)
    r.cycles_journaled = len(cycles)
    r.overlapping_cycles = _overlaps(cycles)
    r.cycles_left_running = sum(1 for c in cycles if c.status == "running")
    r.busy_outside_cycles = sum(
        1 for c in calls if c.kind == "trigger" and c.status == 409
        and not any(c.answered >= cy.started_at - 1.0 and c.sent <= (cy.finished_at or c.answered) + 1.0
                    for cy in cycles))
    if r.cycles_journaled != r.triggers_accepted:
        lost.append(f"{r.triggers_accepted} triggers answered 202 but the journal holds {r.cycles_journaled} cycles")

    audit = AuditLog(home / "audit" / "audit.jsonl")
    report = audit.verify()
    r.audit_ok, r.audit_records = report.ok, report.records
    if not report.ok:
        r.problems.append(f"audit chain: {report.problem}")
    records = list(audit.records())

    accepted: dict[str, list[str]] = {}
    for c in calls:
        if c.kind == "decide" and c.status == 200 and c.target:
            rid, verb = c.target.split(":")
            accepted.setdefault(rid, []).append("approved" if verb == "approve" else "denied")
    audited: dict[str, list[str]] = {}
    for rec in records:
        if rec.get("kind") in ("approval_approved", "approval_denied") and rec.get("actor") == "api":
            audited.setdefault(rec["approval_id"], []).append(rec["kind"].removeprefix("approval_"))
    store = {a.id: a for a in ApprovalStore(home / "approvals.db").list()}
    for rid in ids:
        got, trail, row = accepted.get(rid, []), audited.get(rid, []), store.get(rid)
        want_status = got[0] if len(got) == 1 else "pending"
        if len(got) > 1 or trail != got or row is None or row.status != want_status:
            lost.append(f"approval {rid}: accepted {got}, audited {trail}, stored {row.status if row else None}")

    flips = [rec for rec in records if rec.get("kind") == "kill_switch" and rec.get("actor") == "api"]
    r.kill_switch_audit_records = len(flips)
    if len(flips) != r.kill_switch_flips:
        lost.append(f"{r.kill_switch_flips} kill-switch flips answered 200, {len(flips)} in the audit log")
    final = KillSwitch(home / "kill_switch.json").state().on
    if flips and flips[-1]["on"] != final:
        lost.append(f"the kill switch is {'on' if final else 'off'} but its last audited flip set it "
                    f"{'on' if flips[-1]['on'] else 'off'}")
    r.lost_updates = len(lost)
    r.problems.extend(lost[:MAX_FINDINGS])


def run_api_load(*, clients: int = 50, seconds: float = 20.0, approvals: int = 200, seed: int = 0,
                 root: Path | None = None) -> LoadResult:
    """`clients` concurrent loopback clients for `seconds` against the real server (see module doc)."""
    if clients < 1 or seconds <= 0 or approvals < 1:
        raise InputError(f"clients, seconds and approvals must be positive (got {clients}, {seconds}, {approvals}).",
                         "Pass e.g. clients=50, seconds=20, approvals=200.")
    result = LoadResult(clients=clients, seconds=seconds)
    with _workdir(root) as work, ApiServer(work / "load", token=TOKEN) as server:
        ids = _seed_approvals(server.home, approvals)
        result.approvals_created = len(ids)
        calls = asyncio.run(_drive(server.url, clients, seconds, ids, seed))
        if not server.wait_idle():
            result.problems.append("a cycle was still running 60 s after the load stopped")
        server.stop()
        _count_calls(result, calls)
        result.unhandled_exceptions = server.tracebacks()
        _reconcile(result, calls, server.home, ids)
    return result

