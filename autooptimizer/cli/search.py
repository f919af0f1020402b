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
    max_seq_length: int = typer.Option(128, min=8, max=512, help="Document truncation in tokens: 128 embeds ~2x "
                                       "faster than 256 at the same SciFact NDCG@10 (docs/benchmarks.md, Encoder); "
                                       "part of the version id."),
) -> None:
    """Build the first champion (BM25 + MiniLM fusion tuned on SciFact train) and store it under AUTOOPT_HOME."""
    from rich.console import Console

    from autooptimizer.search.bootstrap import bootstrap

    console = Console(stderr=True)
    result = bootstrap(seed=seed, dataset=dataset, progress=True, log=lambda m: console.print(f"[dim]{m}[/dim]"),
                       warm=[w.strip() for w in warm.split(",") if w.strip()], max_seq_length=max_seq_length)
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
    background: bool = typer.Option(False, "--background",
                                    help="Answer at once with BM25 alone while missing document vectors embed."),
) -> None:
    """Serve /search, /feedback, /metrics and the admin endpoints."""
    import uvicorn

    from autooptimizer.infra.memory import limit_arenas

    limit_arenas()  # before uvicorn's threads (infra/memory.py)

    from autooptimizer.search.aliases import CHAMPION, require_alias
    from autooptimizer.search.app import SearchService, create_app
    from autooptimizer.search.beir import load_collection
    from autooptimizer.settings import get_settings

    settings = get_settings()
    names = [d.strip() for d in datasets.split(",") if d.strip()]
    collection = load_collection(names)
    typer.echo(f"collection {collection.name}: {len(collection)} docs; loading models", err=True)
    service = SearchService(collection, stable or require_alias(CHAMPION), canary, canary_weight, replicas=replicas,
                            seed=seed, price_per_compute_second=price, budget=budget, progress=True,
                            background=background)
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


def _ints(text: str, what: str) -> list[int]:
    from autooptimizer.errors import InputError

    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        out = []
    if not out or min(out) < 1:
        raise InputError(f"{what} {text!r} is not a list of positive integers.", f"Pass e.g. --{what} 1,2.")
    return out


def bench_encode(
    docs: int = typer.Option(300, min=8, help="Documents in the seeded sample each setting encodes."),
    dataset: str = typer.Option("scifact"),
    threads: str = typer.Option("1,2", help="Comma-separated torch thread counts."),
    max_seq_length: str = typer.Option("128,192,256", "--max-seq-length", help="Comma-separated truncations."),
    rounds: int = typer.Option(5, min=1, help="Rounds the sample is cut into; each runs every setting once."),
    ndcg: bool = typer.Option(False, "--ndcg", help="Also each length's NDCG@10 (embeds the corpus once per length)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Encoder docs/s per (threads, max_seq_length) side by side; with --ndcg, each length's dataset NDCG@10."""
    from autooptimizer.search.encode_bench import run

    res = run(dataset, docs, _ints(threads, "threads"), _ints(max_seq_length, "max-seq-length"), rounds, ndcg)
    if as_json:
        typer.echo(res.model_dump_json(indent=2))
        return
    typer.echo(f"{res.sample_docs} {dataset} docs, {res.rounds} interleaved rounds; other processes used "
               f"{res.others_cores} cores; 1-min load {res.load_1min[0]} -> {res.load_1min[1]}")
    typer.echo("| threads | max_seq_length | docs/s | per round |\n|---|---|---|---|")
    for r in res.rows:
        typer.echo(f"| {r.threads} | {r.max_seq_length} | {r.docs_per_s} | {r.round_docs_per_s} |")
    if res.quality:
        typer.echo("\n| max_seq_length | weight (train) | train NDCG@10 | test NDCG@10 | corpus encode s |")
        typer.echo("|---|---|---|---|---|")
        for q in res.quality:
            train = q.fit.train_ndcg10_by_weight[f"{q.fit.weight:.1f}"]
            typer.echo(f"| {q.max_seq_length} | {q.fit.weight} | {train} | {q.fit.test_ndcg10} | "
                       f"{q.corpus_encode_seconds} |")


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


def bench_dense_index(
    domains: str = typer.Option("lisa,npl", help="Domains whose corpus is searched, comma-separated."),
    k: int = typer.Option(100, min=1, help="Neighbours per query (an expert's dense_candidates)."),
    max_seq_length: int = typer.Option(128, min=16, help="Which cached vectors (the champion's truncation)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The dense candidates' search per domain: exact scan vs HNSW graph, CPU ms per query and recall@k."""
    from autooptimizer.errors import InputError
    from autooptimizer.search.dense_index_bench import run

    names = [d.strip() for d in domains.split(",") if d.strip()]
    if not names:
        raise InputError(f"--domains {domains!r} names no domain.", "Pass e.g. --domains lisa,npl.")
    rows = run(names, k=k, max_seq_length=max_seq_length)
    if as_json:
        typer.echo(json.dumps([r.model_dump() for r in rows], indent=2))
        return
    typer.echo("| domain | docs | queries | k | graph build s | exact ms | graph ms | ratio | recall | worst |")
    typer.echo("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        typer.echo(f"| {r.domain} | {r.docs} | {r.queries} | {r.k} | {r.build_s} | {r.exact_ms} | {r.graph_ms} | "
                   f"{r.ratio} | {r.recall} | {r.worst_recall} |")


def bench_search(
    model: str = typer.Option(None, help="Model version (default: the champion alias)."),
    datasets: str = typer.Option("scifact,cran", help="The served collection."),
    workers: str = typer.Option("1,2", help="uvicorn worker processes, comma-separated."),
    cache: str = typer.Option("off,on", help="Query-vector cache settings to run: off, on or both."),
    rates: str = typer.Option("10,25,50,75,100,125,150,200,250", help="Offered req/s of each open-loop step."),
    seconds: float = typer.Option(6.0, min=1.0, help="Length of each step."),
    calibrate: int = typer.Option(200, min=10, help="Queries of the in-process stage-cost calibration."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The service's capacity: stepped open-loop load on loopback per (workers, cache), stage costs, physical limit."""
    from rich.console import Console

    from autooptimizer.errors import InputError
    from autooptimizer.search import aliases
    from autooptimizer.search.capacity import run

    flags = {"off": False, "on": True}
    caches = [flags[c.strip()] for c in cache.split(",") if c.strip() in flags]
    if not caches:
        raise InputError(f"--cache {cache!r} names no setting.", "Pass off, on or off,on.")
    try:
        steps = [float(r) for r in rates.split(",") if r.strip()]
    except ValueError:
        steps = []
    if not steps or min(steps) <= 0:
        raise InputError(f"--rates {rates!r} is not a list of positive numbers.", "Pass e.g. --rates 10,50,100.")
    console = Console(stderr=True)
    res = run(model or aliases.require_alias(aliases.CHAMPION), [d for d in datasets.split(",") if d],
              _ints(workers, "workers"), caches, steps, seconds, calibrate, say=lambda m: console.print(f"[dim]{m}"))
    if as_json:
        typer.echo(res.model_dump_json(indent=2))
        return
    for c in res.calibration:
        split = ", ".join(f"{s.stage} {s.mean_ms:.2f}" for s in c.stages)
        typer.echo(f"stage means (ms), cache {'on' if c.query_cache else 'off'}: {split}; CPU/request "
                   f"{c.cpu_ms_per_request:.2f} ms -> limit {c.limit_rps} req/s on {res.cores} cores")
    typer.echo("| workers | cache | req/s at p95<=100ms | saturation req/s | limit req/s | ratio | server CPU ms/req |")
    typer.echo("|---|---|---|---|---|---|---|")
    for r in res.settings:
        typer.echo(f"| {r.workers} | {'on' if r.query_cache else 'off'} | {r.rps_at_p95_target} | {r.saturation_rps} "
                   f"| {r.limit_rps} | {r.ratio_to_limit} | {r.server_cpu_ms_per_request} |")


def bench_release(
    model: str = typer.Option(None, help="Model version (default: the champion alias)."),
    datasets: str = typer.Option("scifact", help="The served collection."),
    replicas: int = typer.Option(8, min=1, max=64, help="Concurrent searches the service runs (/admin/replicas)."),
    threads: int = typer.Option(32, min=1, max=200, help="Closed-loop clients overloading the cross-encoder."),
    seconds: float = typer.Option(60.0, min=1.0, help="How long the cross-encoder is overloaded."),
    settle: float = typer.Option(30.0, min=0.5, help="Seconds of throttled champion traffic around the overload."),
    throughput: float = typer.Option(15.0, min=0.5, help="Seconds of the champion's closed-loop throughput step."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """RSS a rolled-back, overloaded cross-encoder leaves in the search service: glibc's arenas vs the cap."""
    from rich.console import Console

    from autooptimizer.errors import InputError
    from autooptimizer.search import aliases
    from autooptimizer.search.release_bench import run

    names = [d.strip() for d in datasets.split(",") if d.strip()]
    if not names:
        raise InputError(f"--datasets {datasets!r} names no dataset.", "Pass e.g. --datasets scifact.")
    console = Console(stderr=True)
    res = run(model or aliases.require_alias(aliases.CHAMPION), names,
              replicas=replicas, overload_threads=threads, overload_s=seconds, throughput_s=throughput, settle_s=settle,
              say=lambda m: console.print(f"[dim]{m}"))
    if as_json:
        typer.echo(res.model_dump_json(indent=2))
        return
    typer.echo("| arenas | before MiB | overloaded MiB | after MiB | kept MiB | CE requests | champion req/s "
               "| failed |")
    typer.echo("|---|---|---|---|---|---|---|---|")
    for r in res.runs:
        typer.echo(f"| {r.arenas} | {r.before_mib} | {r.overloaded_mib} | {r.after_mib} | {r.kept_mib} | "
                   f"{r.cross_encoder_requests} | {r.champion_rps} | {r.failed} |")


def register(app: typer.Typer, bench: typer.Typer) -> None:
    """Add this area's commands to the root app and its benchmarks to `autoopt bench`."""
    app.command("bootstrap")(bootstrap_cmd)
    app.add_typer(search_app, name="search")
    bench.command("encode")(bench_encode)
    bench.command("serving-cost")(bench_serving_cost)
    bench.command("search")(bench_search)
    bench.command("dense-index")(bench_dense_index)
    bench.command("release")(bench_release)
