"""Named checkpoints inside a cycle: the places a crash can happen, made observable.

The cycle calls `checkpoint("step:<name>:start")` right after a step is journaled as started, and
`checkpoint("step:<name>:end")` right after it is journaled done; `Release` calls `deploy:after_commit` /
`deploy:after_apply` (and `rollback:...` for a rollback) inside its commit + apply unit. With no hook installed a
checkpoint does nothing. The crash suite (`autooptimizer/reliability/crash.py`) installs a hook in a child process
that stops at one named checkpoint so the parent can SIGKILL it exactly there; tracing or progress displays may
install observers the same way. Hooks must not raise; an error in one is logged and ignored.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

Hook = Callable[[str], None]
_HOOKS: list[Hook] = []
_LOCK = threading.Lock()


def checkpoint(name: str) -> None:
    """Announce that the cycle reached `name` (e.g. "step:promote:end", "deploy:after_commit")."""
    for hook in list(_HOOKS):
        try:
            hook(name)
        except Exception:  # noqa: BLE001 - an observer never changes the cycle
            log.exception("checkpoint hook %r failed at %s", hook, name)


def add_checkpoint_hook(hook: Hook) -> Callable[[], None]:
    """Install `hook(name)`; returns a function that removes it."""
    with _LOCK:
        _HOOKS.append(hook)

    def remove() -> None:
        with _LOCK:
            if hook in _HOOKS:
                _HOOKS.remove(hook)

    return remove
