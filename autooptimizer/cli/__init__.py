"""The `autoopt` command line. Each area registers its commands from its own module."""

from autooptimizer.cli.app import app, main

__all__ = ["app", "main"]
