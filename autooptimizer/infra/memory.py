"""Process memory: this process's resident set, and giving freed heap back to the operating system.

CPython objects, numpy arrays and torch CPU tensors are freed to the C allocator (glibc malloc), which keeps freed
pages in its arenas for reuse, so the resident set does not shrink when a large model is dropped. `trim_heap()`
calls glibc's `malloc_trim(0)`, which returns the free pages of every arena to the OS (madvise, glibc >= 2.8).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Callable
from functools import cache


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None where the C library has none (macOS, musl, Windows)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


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
