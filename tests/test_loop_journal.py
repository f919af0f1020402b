"""The cycle lock: one holder at a time, and asking whether someone holds it never takes it from a caller."""

from __future__ import annotations

import threading

from autooptimizer.loop.journal import CycleLock
from autooptimizer.settings import get_settings


def test_one_holder_at_a_time() -> None:
    a, b = CycleLock(get_settings()), CycleLock(get_settings())
    assert a.acquire() and not b.acquire() and not a.acquire()
    assert b.held_elsewhere() and not a.held_elsewhere()
    a.release()
    assert not b.held_elsewhere() and b.acquire()
    b.release()


def test_probing_never_makes_acquire_fail() -> None:
    """`held_elsewhere` (every status read and metrics scrape) used to take the lock for an instant, so a trigger
    arriving then answered 409 with no cycle running. Probe in a tight loop; every acquire must still win."""
    lock = CycleLock(get_settings())
    other = CycleLock(get_settings())
    stop = threading.Event()
    probes = [0]

    def probe() -> None:  # the same instance (the API's runner) and another one (a second runner) both probe
        while not stop.is_set():
            lock.held_elsewhere()
            other.held_elsewhere()
            probes[0] += 1

    t = threading.Thread(target=probe)
    t.start()
    try:
        refused = 0
        for _ in range(500):
            if lock.acquire():
                lock.release()
            else:
                refused += 1
    finally:
        stop.set()
        t.join()
    assert probes[0] > 0 and refused == 0
