"""Run the search service as a process: `python -m autooptimizer.infra.serve --port N --datasets scifact,cran`.

The local stack starts it this way so the service has its own interpreter (and GIL) apart from the simulator and
the gates. The model defaults to the `champion` alias; the collection is the union of the given datasets.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from pydantic import BaseModel

if TYPE_CHECKING:
    from fastapi import FastAPI


def build_app(datasets: list[str], model: str | None, canary: str | None = None, canary_weight: float = 0.0,
              progress: bool = True, rerank_depth: int | None = None, background: bool = False) -> FastAPI:
    """The real FastAPI app over a union collection; warm (embeddings cached) before it is returned, or with
    `background`, serving BM25 alone until the versions' vectors are embedded (see search/app.py)."""
    from autooptimizer.search import aliases
    from autooptimizer.search.app import SearchService, create_app
    from autooptimizer.search.beir import load_collection

    collection = load_collection(datasets)
    stable = model or aliases.require_alias(aliases.CHAMPION)
    service = SearchService(collection, stable, canary=canary, canary_weight=canary_weight, progress=progress,
                            background=background)
    service.rerank_depth = rerank_depth  # the variant (cheaper/faster depth) the deployment asks for
    return create_app(service)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m autooptimizer.infra.serve", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--datasets", default="scifact,cran", help="comma-separated, names or paths")
    parser.add_argument("--model", default=None, help="stable model version (default: the champion alias)")
    parser.add_argument("--canary", default=None)
    parser.add_argument("--canary-weight", type=float, default=0.0)
    parser.add_argument("--rerank-depth", type=int, default=int(os.environ.get("AUTOOPT_RERANK_DEPTH") or 0) or None,
                        help="override the rerank depth (default: AUTOOPT_RERANK_DEPTH, else each version's)")
    parser.add_argument("--background", action="store_true",
                        help="answer at once with BM25 alone while missing document vectors are embedded")
    parser.add_argument("--workers", type=int, default=1,
                        help="uvicorn worker processes; each holds its own models, metrics and admin state, so "
                        "more than 1 is for stateless serving (capacity), not for the loop")
    args = parser.parse_args(argv)

    import uvicorn

    from autooptimizer.infra.memory import limit_arenas

    limit_arenas()  # before uvicorn's threads: a rolled-back model's memory must leave (infra/memory.py)

    from autooptimizer.settings import apply_offline_env

    apply_offline_env()
    config = ServeConfig(datasets=[d for d in args.datasets.split(",") if d], model=args.model, canary=args.canary,
                         canary_weight=args.canary_weight, rerank_depth=args.rerank_depth,
                         background=args.background)
    if args.workers > 1:  # uvicorn's workers import the app by name: each builds it from the environment
        os.environ[CONFIG_ENV] = config.model_dump_json()
        uvicorn.run("autooptimizer.infra.serve:app_from_env", factory=True, workers=args.workers, host="127.0.0.1",
                    port=args.port, log_level="warning", access_log=False)
        return
    uvicorn.run(config.app(), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


CONFIG_ENV = "AUTOOPT_SERVE_CONFIG"


class ServeConfig(BaseModel):
    """What one service process serves (passed to uvicorn's worker processes as JSON in AUTOOPT_SERVE_CONFIG)."""

    datasets: list[str]
    model: str | None = None
    canary: str | None = None
    canary_weight: float = 0.0
    rerank_depth: int | None = None
    background: bool = False

    def app(self) -> FastAPI:
        limit_threads(serving_threads())
        return build_app(self.datasets, self.model, self.canary, self.canary_weight, rerank_depth=self.rerank_depth,
                         background=self.background)


def app_from_env() -> FastAPI:
    """uvicorn factory for `--workers N`: the app of the ServeConfig in AUTOOPT_SERVE_CONFIG."""
    from autooptimizer.errors import ConfigError

    raw = os.environ.get(CONFIG_ENV)
    if not raw:
        raise ConfigError(f"{CONFIG_ENV} is not set.", "Start workers with python -m autooptimizer.infra.serve.")
    return ServeConfig.model_validate_json(raw).app()


def serving_threads() -> int:
    """Torch/BLAS threads of a serving process: AUTOOPT_THREADS when set, else 1. Requests run concurrently (two
    worker slots per process), so each is best on one thread: one query encoding took 10-17 ms on 1 thread and
    43-63 ms on 2 beside other work (docs/benchmarks.md, "Search service capacity"). A background embed re-checks
    the idle cores itself (search/embeddings.py)."""
    from autooptimizer.settings import get_settings

    settings = get_settings()
    return 1 if settings.threads_auto else settings.threads


def limit_threads(threads: int) -> None:
    """Cap torch AND the BLAS numpy uses at `threads` (AUTOOPT_THREADS). OpenBLAS otherwise starts one spinning
    thread per core, and on a shared 2-core box each small matrix product of a request (the ltr expert's
    neighbour features) waits for the other core: measured 0.1 ms alone, ~10 ms beside other work."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        pass


if __name__ == "__main__":  # last: main() needs every function above (limit_threads was defined after it once)
    main()
