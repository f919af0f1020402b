"""`python -m autooptimizer` runs the CLI."""

from autooptimizer.cli import main

main()
