"""Errors that name the problem and the fix, so a user never has to read a traceback."""

from __future__ import annotations


class AutoOptError(Exception):
    """Base error: `problem` says what is wrong, `fix` says what to do about it."""

    def __init__(self, problem: str, fix: str = "") -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}" + (f" Fix: {fix}" if fix else ""))


class ConfigError(AutoOptError):
    """A setting is missing or invalid."""


class InputError(AutoOptError):
    """User or API input is invalid."""


class NotFoundError(AutoOptError):
    """A referenced model, dataset, cycle or request does not exist."""
