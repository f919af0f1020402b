"""CLI commands for the search area: bootstrap, search serve|query|models, bench encode|serving-cost."""

from __future__ import annotations

import json

import typer

search_app = typer.Typer(help="The search service under optimization.", no_args_is_help=True)


def bootstrap_cmd(
    seed: int = typer.Option(0, help="Seed (recorded and part of the version id)."),
    dataset: str = typer.Option("scifact", help="BEIR dataset name under AUTOOPT_DATA_DIR, or a path."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    warm: str = typer.Option("", help="Comma-separated datasets to embed now for serving (e.g. cran)."),
) -> None:
    """Build the first champion (BM25 + MiniLM fusion tuned on SciFact train) and store it under AUTOOPT_HOME."""
    from rich.console import Console

    from autooptimizer.search.bootstrap import bootstrap

    console = Console(stderr=True)
    result = bootstrap(seed=seed, dataset=dataset, progress=True, log=lambda m: console.print(f"[dim]{m}[/dim]"),
                       warm=[w.strip() for w in warm.split(",") if w.strip()])
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return
    state = "created" if result.created else "already existed"
    typer.echo(f"champion {result.version} ({state}): fusion weight {result.fusion_weight}, "
               f"depth {result.rerank_depth}")
    typer.echo(f"{result.dataset} test NDCG@10: fused {result.test_ndcg10:.4f}  BM25 {result.test_bm25_ndcg10:.4f}  "
               f"MiniLM {result.test_minilm_ndcg10:.4f}   ({result.wall_seconds:.0f} s to build)")
    typer.echo(f"aliases: {result.aliases}")


@search_app.command("serve")
def serve(
    host: str = typer.Option(None, help="Bind address (default AUTOOPT_SEARCH_HOST, 127.0.0.1)."),
    port: int = typer.Option(None, help="Port (default AUTOOPT_SEARCH_PORT, 8700)."),
    datasets: str = typer.Option("scifact,cran", help="Comma-separated BEIR datasets served as one collection."),
    stable: str = typer.Option(None, help="Stable model version (default: the champion alias)."),
    canary: str = typer.Option(None, help="Canary model version."),
    canary_weight: float = typer.Option(0.0, min=0.0, max=1.0, help="Share of traffic sent to the canary."),
    replicas: int = typer.Option(2, min=1, max=64, help="Concurrent search workers."),
    seed: int = typer.Option(0, help="Seed of the canary traffic split."),
    price: float = typer.Option(None, help="Dollars per compute-second (default: the env profile's cost section)."),
    budget: float = typer.Option(None, help="Budget in dollars (default: the env profile's cost section)."),
) -> None:
    """Serve /search, /feedback, /metrics and the admin endpoints."""
    import uvicorn

    from autooptimizer.search.aliases import CHAMPION, require_alias
    from autooptimizer.search.app import SearchService, create_app
    from autooptimizer.search.beir import load_collection
    from autooptimizer.settings import get_settings

    settings = get_settings()
    names = [d.strip() for d in datasets.split(",") if d.strip()]
    collection = load_collection(names)
    typer.echo(f"collection {collection.name}: {len(collection)} docs; loading models", err=True)
    service = SearchService(collection, stable or require_alias(CHAMPION), canary, canary_weight, replicas=replicas,
                            seed=seed, price_per_compute_second=price, budget=budget, progress=True)
    uvicorn.run(create_app(service), host=host or settings.search_host, port=port or settings.search_port,
                log_level="warning")


@search_app.command("query")
def query(
    text: str = typer.Argument(..., help="The query."),
    k: int = typer.Option(10, help="Number of hits."),
    url: str = typer.Option(None, help="Service URL (default AUTOOPT_SEARCH_HOST:PORT)."),
) -> None:
    """Ask a running service and print its hits."""
    import httpx

    from autooptimizer.errors import AutoOptError
    from autooptimizer.settings import get_settings

    base = url or get_settings().search_url
    try:
        r = httpx.get(f"{base}/search", params={"q": text, "k": k}, timeout=30)
    except httpx.HTTPError as exc:
        raise AutoOptError(f"Search service at {base} is unreachable ({exc}).",
                           "Start it: autoopt search serve") from exc
    if r.status_code != 200:
        detail = r.json().get("detail", r.text)
        raise AutoOptError(f"Search service answered {r.status_code}: {detail}")
    typer.echo(json.dumps(r.json(), indent=2))


@search_app.command("models")
def models() -> None:
    """List stored model versions and aliases."""
    from autooptimizer.search import aliases, model_store

    names = aliases.all_aliases()
    for v in model_store.list_versions():
        spec = model_store.load(v)
        tags = ",".join(a for a, ver in names.items() if ver == v)
        typer.echo(f"{v}\t{spec.kind}\tw={spec.fusion_weight}\tdepth={spec.rerank_depth}\t{tags}")


def bench_encode(
    docs: int = typer.Option(200, help="Documents to encode."),
    dataset: str = typer.Option("scifact"),
    max_seq_length: int = typer.Option(256, help="Truncation in tokens."),
) -> None:
    """Document encoding throughput of the MiniLM encoder (AUTOOPT_THREADS torch threads)."""
    import time

    from autooptimizer.search.beir import load_collection
    from autooptimizer.search.encoder import Encoder
    from autooptimizer.settings import get_settings

    col = load_collection([dataset])
    texts = [col.text(d) for d in col.doc_ids[:docs]]
    enc = Encoder(None, max_seq_length)
    enc.encode(texts[:8])
    t = time.perf_counter()
    enc.encode(texts)
    dt = time.perf_counter() - t
    typer.echo(json.dumps({"docs": len(texts), "seconds": round(dt, 2), "docs_per_s": round(len(texts) / dt, 1),
                           "max_seq_length": max_seq_length, "threads": get_settings().threads}))


def bench_serving_cost(
    champion: str = typer.Option(..., help="model version serving now"),
    challenger: str = typer.Option(..., help="model version to compare"),
    datasets: str = typer.Option("scifact:test,cran", help="dataset[:split] list, comma-separated"),
    queries: int = typer.Option(60, help="queries per dataset"),
) -> None:
    """CPU time per query of champion vs challenger, side by side in one process (JSON)."""
    from autooptimizer.search.serving_cost import serving_cost

    pairs = [(d.split(":")[0], d.split(":")[1] if ":" in d else None) for d in datasets.split(",") if d]
    rows = serving_cost(champion, challenger, pairs, queries=queries)
    typer.echo(json.dumps([r.model_dump() for r in rows], indent=2))


def register(app: typer.Typer, bench: typer.Typer) -> None:
    """Add this area's commands to the root app and its benchmarks to `autoopt bench`."""
    app.command("bootstrap")(bootstrap_cmd)
    app.add_typer(search_app, name="search")
    bench.command("encode")(bench_encode)
    bench.command("serving-cost")(bench_serving_cost)
