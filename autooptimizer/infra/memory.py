"""Process memory: this process's resident set, and giving freed heap back to the operating system.

CPython objects, numpy arrays and torch CPU tensors are freed to the C allocator (glibc malloc), which keeps freed
pages in its arenas for reuse, so the resident set does not shrink when a large model is dropped. `trim_heap()`
calls glibc's `malloc_trim(0)`, which returns the free pages of every arena to the OS (madvise, glibc >= 2.8).

glibc also gives each new thread its own arena, up to 8 per core, and a freed chunk goes back to the arena that
allocated it. A service whose thread pool (uvicorn's, 40 threads) runs torch inference therefore spreads each
request's activations over up to 16 arenas on 2 cores, whose fragments `malloc_trim` cannot give back: after an
overloaded cross-encoder was rolled back, the month soak's search service kept ~230 MiB. `limit_arenas()` caps the
arenas of a long-lived service (M_ARENA_MAX, the runtime form of glibc's `MALLOC_ARENA_MAX`; docs/benchmarks.md,
"### Search service memory": at the soak's 8 replicas 191 MiB kept after the rollback with glibc's default, 57 MiB
with 2 arenas).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
from collections.abc import Callable
from functools import cache

from autooptimizer.errors import ConfigError

ARENA_MAX = 2  # arenas per long-lived service process (glibc's default: 8 x cores)
M_ARENA_MAX = -8  # mallopt parameter number (glibc malloc.h)


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None where the C library has none (macOS, musl, Windows)."""
    libc = _libc()
    fn = getattr(libc, "malloc_trim", None) if libc is not None else None
    if fn is None:
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


@cache
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def limit_arenas(n: int = ARENA_MAX) -> bool:
    """Cap glibc's malloc arenas of this process at `n` and export MALLOC_ARENA_MAX=n to the processes it starts
    (uvicorn's workers). Call first thing in a long-lived service, before its threads start: a thread keeps the
    arena it got. An operator's own MALLOC_ARENA_MAX wins (nothing is changed); a blank one reads as unset. Returns
    True when the cap was set here; False when the operator set one or there is no glibc mallopt (macOS, musl,
    Windows). Raises ConfigError for a MALLOC_ARENA_MAX that is not a whole number >= 1: glibc ignores "0", "-1",
    "abc" or an overflowing number, and keeping quiet would leave the service with 8 arenas per core."""
    if n < 1:
        raise ValueError(f"limit_arenas: n must be >= 1, got {n}")
    given = os.environ.get("MALLOC_ARENA_MAX", "")
    if given.strip():
        if not re.fullmatch(r"[1-9][0-9]{0,5}", given):
            raise ConfigError(f"MALLOC_ARENA_MAX={given!r} is not a whole number >= 1, so glibc ignores it and the "
                              "service would run with its default of 8 malloc arenas per core.",
                              f"Unset MALLOC_ARENA_MAX (the service caps its arenas at {ARENA_MAX}) or set a whole "
                              "number such as 2.")
        return False
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None) if libc is not None else None
    if mallopt is None:
        return False
    os.environ["MALLOC_ARENA_MAX"] = str(n)
    return bool(mallopt(ctypes.c_int(M_ARENA_MAX), ctypes.c_int(n)))


def trim_heap() -> bool:
    """Return free heap pages to the OS (malloc_trim(0)); False where glibc's malloc_trim is not available."""
    fn = _malloc_trim()
    if fn is None:
        return False
    fn(0)
    return True


def rss_bytes(pid: int | None = None) -> int | None:
    """Resident set size in bytes (VmRSS of /proc/<pid>/status; this process by default); None where /proc is
    not readable."""
    try:
        with open(f"/proc/{pid or os.getpid()}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
