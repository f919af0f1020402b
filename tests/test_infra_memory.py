"""glibc arenas of a long-lived service (infra/memory.py): `limit_arenas()` caps the arenas its threads spread over,
so a rolled-back model's memory can leave; an operator's MALLOC_ARENA_MAX wins."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from autooptimizer.infra.memory import limit_arenas

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="glibc malloc")

# Eight threads, alive together, each allocate (and keep) 64 KiB blocks: below the mmap threshold, so they come from
# the thread's arena; glibc's malloc_stats() prints one "Arena N:" block per arena to stderr.
PROBE = """
import ctypes, sys, threading
from autooptimizer.infra.memory import limit_arenas
applied = limit_arenas({n}) if {limit} else None
keep = []
barrier = threading.Barrier(8)
def work():
    barrier.wait()  # all eight alive at once: a finished thread's arena is handed to the next one
    keep.extend(bytearray(64 * 1024) for _ in range(20))
    barrier.wait()
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
print(applied, flush=True)
ctypes.CDLL("libc.so.6").malloc_stats()
"""


def _arenas(limit: bool, n: int = 2, env: dict[str, str] | None = None) -> tuple[str, int]:
    base = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    out = subprocess.run([sys.executable, "-c", PROBE.format(n=n, limit=limit)], capture_output=True, text=True,
                         env={**base, **(env or {})}, check=True, timeout=120)
    return out.stdout.strip(), sum(line.startswith("Arena ") for line in out.stderr.splitlines())


def test_threads_spread_over_many_arenas_without_the_cap() -> None:
    assert _arenas(limit=False)[1] > 2, "glibc's default gives new threads arenas of their own"


def test_the_cap_holds_every_thread_to_n_arenas() -> None:
    assert _arenas(limit=True, n=2) == ("True", 2)
    assert _arenas(limit=True, n=1) == ("True", 1)


def test_an_operators_malloc_arena_max_wins() -> None:
    applied, arenas = _arenas(limit=True, n=1, env={"MALLOC_ARENA_MAX": "3"})
    assert applied == "False" and arenas == 3


def test_the_cap_is_exported_to_the_services_children_and_rejects_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    # set, then deleted: the teardown restores "unset" (a bare delenv of an unset variable records nothing, and the
    # exported cap leaked into every later test's subprocesses)
    monkeypatch.setenv("MALLOC_ARENA_MAX", "")
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    with pytest.raises(ValueError, match="n must be >= 1"):
        limit_arenas(0)
    assert "MALLOC_ARENA_MAX" not in os.environ
    assert limit_arenas(4) is True
    assert os.environ["MALLOC_ARENA_MAX"] == "4"
    assert limit_arenas(2) is False, "set once: the second call sees the exported value and leaves it"


def test_the_exported_cap_does_not_outlive_its_test() -> None:
    """Runs after the test above (file order): the MALLOC_ARENA_MAX it exported is gone again."""
    assert "MALLOC_ARENA_MAX" not in os.environ


@pytest.mark.parametrize("given", ["0", "abc", "-1", "2abc", "1.5", "99999999999999999999"])
def test_a_malformed_malloc_arena_max_is_refused_not_silently_uncapped(given: str) -> None:
    """glibc ignores these (arenas stay at 8 x cores): the operator's value cannot "win", and keeping quiet would
    leave the service uncapped; the start fails naming the variable and the fix."""
    probe = "from autooptimizer.infra.memory import limit_arenas\nlimit_arenas()"
    base = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         env={**base, "MALLOC_ARENA_MAX": given}, timeout=120)
    assert out.returncode != 0
    assert "ConfigError" in out.stderr and f"MALLOC_ARENA_MAX={given!r}" in out.stderr
    assert "Unset MALLOC_ARENA_MAX" in out.stderr


def test_a_blank_malloc_arena_max_reads_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", " ")
    assert limit_arenas(3) is True
    assert os.environ["MALLOC_ARENA_MAX"] == "3"
    assert _arenas(limit=True, n=2, env={"MALLOC_ARENA_MAX": " "}) == ("True", 2)
