"""Run the search service as a process: `python -m autooptimizer.infra.serve --port N --datasets scifact,cran`.

The local stack starts it this way so the service has its own interpreter (and GIL) apart from the simulator and
the gates. The model defaults to the `champion` alias; the collection is the union of the given datasets.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI


def build_app(datasets: list[str], model: str | None, canary: str | None = None, canary_weight: float = 0.0,
              progress: bool = True, rerank_depth: int | None = None) -> FastAPI:
    """The real FastAPI app over a union collection; warm (embeddings cached) before it is returned."""
    from autooptimizer.search import aliases
    from autooptimizer.search.app import SearchService, create_app
    from autooptimizer.search.beir import load_collection

    collection = load_collection(datasets)
    stable = model or aliases.require_alias(aliases.CHAMPION)
    service = SearchService(collection, stable, canary=canary, canary_weight=canary_weight, progress=progress)
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
    args = parser.parse_args(argv)

    import uvicorn

    from autooptimizer.settings import apply_offline_env, get_settings

    apply_offline_env()
    limit_threads(get_settings().threads)
    app = build_app([d for d in args.datasets.split(",") if d], args.model, args.canary, args.canary_weight,
                    rerank_depth=args.rerank_depth)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


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


if __name__ == "__main__":
    main()

