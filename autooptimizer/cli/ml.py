"""CLI commands for the ml area: data build, diagnose, augment, train, eval, repair; bench repair|train-throughput.

Heavy libraries (torch, transformers, shap, nlpaug, mlflow) are imported inside the commands.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

data_app = typer.Typer(help="Training datasets built from the feedback log.", no_args_is_help=True)


def _echo(obj, as_json: bool, text: str = "") -> None:
    if as_json:
        typer.echo(json.dumps(obj, indent=2, default=str))
    else:
        typer.echo(text or json.dumps(obj, indent=2, default=str))


def _items(text: str | None, option: str | None = None) -> list[str]:
    """A comma-separated option as its items, spaces trimmed, empty items dropped (`"a, b,"` -> a, b). With `option`
    (a list of names) a given value must name something, each name once: `--domains ""` would otherwise run nothing
    or fall back to the defaults, and `--domains cran,cran` run cran twice."""
    from autooptimizer.errors import InputError

    items = [x.strip() for x in (text or "").split(",") if x.strip()]
    if option is None or text is None:
        return items
    if not items:
        raise InputError(f"{option} {text!r} names nothing.", f"Name one or more, comma-separated, or leave {option} "
                         "out.")
    twice = sorted({x for x in items if items.count(x) > 1})
    if twice:
        raise InputError(f"{option} names {', '.join(twice)} more than once.", "Name each once.")
    return items


def _console():
    from rich.console import Console

    return Console(stderr=True)


@data_app.command("build")
def data_build(
    feedback: Path = typer.Option(None, help="Feedback log (default AUTOOPT_HOME/feedback/feedback.jsonl)."),
    parent: str = typer.Option(None, help="Model version that served the traffic (default: from the log)."),
    hard_negatives: int = typer.Option(10, min=0, help="Served top-k documents used as hard negatives."),
    augmented: Path = typer.Option(None, help="augmented_dataset.csv to add (from `autoopt augment`)."),
    from_dataset: str = typer.Option(None, help="Dataset hash the augmented CSV was made from."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Build an immutable, hash-addressed dataset (pairs + dataset_manifest.yaml) under AUTOOPT_HOME/datasets."""
    from autooptimizer.ml.dataset import build_dataset, datasets_root
    from autooptimizer.settings import get_settings

    fb = feedback or get_settings().feedback_log
    m = build_dataset(fb, parent_version=parent, hard_negatives_k=hard_negatives, augmented_csv=augmented,
                      parent_dataset=from_dataset)
    out = {**m.model_dump(mode="json"), "path": str(datasets_root() / m.hash)}
    _echo(out, as_json, f"dataset {m.hash}: {m.counts.queries} queries, {m.counts.positives} positives, "
                        f"{m.counts.hard_negatives} hard negatives -> {out['path']}")


def diagnose_cmd(
    dataset: str = typer.Option(..., help="Dataset hash (the shifted traffic's feedback)."),
    model: str = typer.Option("champion", help="Alias, version id or model folder to explain."),
    explainer: str = typer.Option("shap", help="shap | lime (cheaper)."),
    queries: int = typer.Option(3, min=1, max=20, help="How many worst-served queries to explain."),
    max_evals: int = typer.Option(64, min=8, help="SHAP model evaluations per query."),
    original: str = typer.Option("scifact", help="Original-domain dataset (its train queries are the reference)."),
    out: Path = typer.Option(None, help="Folder for diagnostic_report.json (default AUTOOPT_HOME/diagnostics)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Explain the reranker on the worst queries (SHAP/LIME), measure the query-term shift, give a verdict."""
    from autooptimizer.ml.dataset import load_dataset
    from autooptimizer.ml.diagnose import diagnose, write_report
    from autooptimizer.ml.evaluate import resolve_model
    from autooptimizer.search.beir import load_beir, load_collection
    from autooptimizer.settings import get_settings

    if explainer not in ("shap", "lime"):
        from autooptimizer.errors import InputError

        raise InputError(f"Unknown explainer {explainer!r}.", "Use shap or lime.")
    settings = get_settings()
    ds = load_dataset(dataset)
    spec = resolve_model(model)
    collection = load_collection(ds.manifest.domains)
    train_q = list(load_beir(settings.dataset(original), split="train").queries.values())
    rep = diagnose(spec, collection, ds, train_q, n_queries=queries, explainer=explainer, max_evals=max_evals)
    path = write_report(rep, out or settings.path("diagnostics", ds.manifest.hash, "x").parent)
    _echo({**rep.model_dump(mode="json"), "path": str(path)}, as_json,
          f"verdict {rep.verdict}: " + "; ".join(rep.evidence) + f"\nreport: {path}")


def augment_cmd(
    dataset: str = typer.Option(..., help="Dataset hash to augment (its weak slice)."),
    out: Path = typer.Option(..., help="Where to write augmented_dataset.csv."),
    size: int = typer.Option(200, min=1, help="Number of augmented queries."),
    mix: str = typer.Option("keyboard,ocr,word_swap,word_delete,spelling", help="Methods, round-robin."),
    seed: int = typer.Option(0, help="Same seed, same output."),
    weak_fraction: float = typer.Option(0.5, help="Share of queries (worst served first) that are augmented."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Augment the weak slice with nlpaug (offline methods); each line names its method and source row."""
    from autooptimizer.ml.augment import augment_dataset

    rep = augment_dataset(dataset, out, size=size, mix=_items(mix), seed=seed,
                          weak_fraction=weak_fraction)
    _echo(rep.model_dump(), as_json, f"{rep.rows} rows {rep.methods} -> {rep.path}")


def train_cmd(
    dataset: str = typer.Option(..., help="Dataset hash to train on."),
    parent: str = typer.Option("champion", help="Alias or version to start from."),
    trainer: str = typer.Option("ltr", help="ltr | bi_encoder | cross_encoder."),
    seed: int = typer.Option(0),
    max_steps: int = typer.Option(200, min=1, help="Hard step budget (neural trainers)."),
    time_budget: float = typer.Option(900.0, help="Hard wall-time budget in seconds."),
    lr: float = typer.Option(3e-5, help="Learning rate (neural trainers)."),
    batch_size: int = typer.Option(16, min=2),
    artifacts_dir: Path = typer.Option(None, help="Folder for train_result.json and checkpoints."),
    adapt: str = typer.Option(None, "--adapt", help="A named adaptation (ml/adapt.py VARIANTS, e.g. dense100_gated); "
                              "default: the trainer's own."),
    original: str = typer.Option("scifact", help="Original domain (its train queries are the ltr gate's reference)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Train a challenger, log it to MLflow, register it and point the `challenger` alias at it."""
    from autooptimizer.ml.adapt import variant
    from autooptimizer.ml.evaluate import resolve_model
    from autooptimizer.ml.train import TrainConfig, train

    cfg = TrainConfig.model_validate({"trainer": trainer, "seed": seed, "max_steps": max_steps,
                                      "time_budget_s": time_budget, "lr": lr, "batch_size": batch_size,
                                      "original": original}
                                     | ({"adaptation": variant(adapt)} if adapt else {}))
    res = train(dataset, parent_version=resolve_model(parent).version, cfg=cfg, artifacts_dir=artifacts_dir)
    _echo(res.model_dump(), as_json, f"challenger {res.version} ({res.trainer}, {res.device}, {res.wall_seconds} s), "
                                     f"MLflow run {res.run_id}")


def eval_cmd(
    model: str = typer.Option(..., help="Alias (champion|challenger|gold), version id, or model folder."),
    data: str = typer.Option(..., help="BEIR folder (or name under AUTOOPT_DATA_DIR)."),
    split: str = typer.Option(None, help="Split, e.g. test (default: all judged queries)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """nDCG@10, MRR@10 and Recall@100 of a model on a BEIR folder (BM25 over that folder's corpus)."""
    from autooptimizer.ml.evaluate import evaluate_spec, resolve_model
    from autooptimizer.settings import get_settings

    spec = resolve_model(model)
    res = evaluate_spec(spec, get_settings().dataset(data), split=split, progress=True).public()
    _echo(res, as_json, "  ".join(f"{k} {v}" for k, v in res.items()) + f"   ({spec.version})")


def repair_cmd(
    domain_data: str = typer.Option(..., help="The new domain's BEIR folder (or name under AUTOOPT_DATA_DIR)."),
    seed: int = typer.Option(0, help="Seed of the feedback/held-out split and of training."),
    holdout_qids: Path = typer.Option(None, help="File of query ids to hold out (one per line or a JSON list)."),
    artifacts_dir: Path = typer.Option(None, help="Where each step writes its artifact (default under AUTOOPT_HOME)."),
    trainer: str = typer.Option("ltr", help="ltr | bi_encoder | cross_encoder."),
    adapt: str = typer.Option(None, "--adapt", help="A named adaptation (ml/adapt.py VARIANTS, e.g. dense100_gated); "
                              "default: the trainer's own."),
    max_steps: int = typer.Option(None, "--max-steps", min=1, help="Neural trainers' step limit (default 200)."),
    original: str = typer.Option("scifact", help="Original domain (its test split is the regression check)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Repair a corpus shift against the current champion: split, feedback, dataset, diagnose, augment, train, eval.
    A bad trainer, adaptation or step limit is refused before the first step."""
    from autooptimizer.ml.repair import repair

    console = _console()

    def on_step(step: str, phase: str, info: dict) -> None:
        if phase == "start":
            console.print(f"[bold]{step}[/bold] ...")
        elif phase == "done":
            console.print(f"[green]{step}[/green] done in {info.get('seconds')} s  "
                          + " ".join(f"{k}={v}" for k, v in info.items() if k != "seconds"))

    res = repair(domain_data, seed=seed, holdout_qids=holdout_qids, artifacts_dir=artifacts_dir, on_step=on_step,
                 trainer=trainer, original=original, adaptation=adapt, max_steps=max_steps)
    out = {"champion": {k: res.champion[k] for k in ("new_domain_ndcg@10", "original_ndcg@10")},
           "challenger": {k: res.challenger[k] for k in ("new_domain_ndcg@10", "original_ndcg@10")},
           "promotable": res.promotable, "artifacts_dir": res.artifacts_dir,
           "champion_version": res.champion["version"], "challenger_version": res.challenger["version"],
           "mlflow_run_id": res.run_id, "reasons": res.reasons, "step_seconds": res.step_seconds}
    _echo(out, as_json, json.dumps(out, indent=2))


def bench_repair(
    domains: str = typer.Option(None, help="Comma-separated new domains (default cran,cisi,med); no protocol."),
    develop: str = typer.Option(None, help="Develop domains (leave-one-domain-out): methods are chosen on these."),
    confirm: str = typer.Option(None, help="Confirm domains. With --develop: declares the round and locks them "
                                "(only the develop domains run). Alone: the confirm run, on frozen code and fresh "
                                "seeds, recorded in the registry."),
    seeds: str = typer.Option("0", help="Split seeds: N, A-B or a comma-separated mix (e.g. 40-49)."),
    jobs: int = typer.Option(1, min=1, help="Repairs at once, each in its own process."),
    trainer: str = typer.Option("ltr", help="ltr | bi_encoder | cross_encoder (the neural ones use a GPU when "
                                "there is one)."),
    adapt: str = typer.Option(None, "--adapt", help="A named adaptation (ml/adapt.py VARIANTS, e.g. pq_crop2000); "
                              "default: the trainer's own."),
    max_steps: int = typer.Option(None, "--max-steps", min=1, help="Neural trainers' step limit (default 200)."),
    bar: float = typer.Option(0.03, help="Held-out NDCG@10 gain a split must reach to count."),
    original: str = typer.Option("scifact", help="Original domain (its test split is the regression check)."),
    registry: Path = typer.Option(None, help="The confirm registry (default docs/data/confirm_registry.json)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check (and with --develop/--confirm declare) the round, "
                                 "run nothing."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Repair each domain from the bootstrapped champion on each seed; print every split, then per domain the mean
    and worst gain, the splits that reached the bar and the worst original-domain drop. --develop/--confirm run the
    leave-one-domain-out protocol (ml/protocol.py): confirm domains are locked until confirmed, once, on frozen
    code."""
    from autooptimizer.ml import protocol
    from autooptimizer.ml.repair_sweep import SweepRow, parse_seeds, summarize, sweep
    from autooptimizer.search import aliases

    console = _console()
    from autooptimizer.ml.repair import check_method

    todo = parse_seeds(seeds)
    check_method(trainer, adapt, max_steps)  # before a round is declared or a confirm seed spent
    reg_path = registry or protocol.default_path()
    reg = protocol.load(reg_path)
    meta: dict = {"phase": "plain"}
    rnd: protocol.Round | None = None
    method = {"trainer": trainer, "adaptation": adapt or "default", "max_steps": max_steps}  # fixed once per round
    confirm_names = _items(confirm, "--confirm")  # a given list names something (else _items refuses it)
    if confirm_names and develop is None:  # the confirm run: frozen code, fresh seeds, every run recorded
        names = confirm_names
        commit = protocol.code_commit()
        rnd = reg.check_confirm(names, todo, commit, method)
        meta = {"phase": "confirm", "round": rnd.name, "frozen_commit": commit, "develop": rnd.develop,
                "touched_before": [d for d in names if reg.developed_before(d, reg.rounds.index(rnd))]}
    else:
        names = _items(develop, "--develop") or _items(domains, "--domains") or ["cran", "cisi", "med"]
        if confirm_names:
            rnd = reg.declare(names, confirm_names, protocol.code_commit(require_clean=False))
            protocol.save(reg, reg_path)
            meta = {"phase": "develop", "round": rnd.name, "confirm_locked": rnd.confirm}
        else:
            reg.check_develop(names)
            meta = {"phase": "develop" if develop else "plain"}
    meta |= {"trainer": trainer, "adaptation": adapt or "default"} | ({"max_steps": max_steps} if max_steps else {})
    if dry_run:
        _echo({**meta, "domains": names, "seeds": todo}, as_json)
        return
    champion = aliases.require_alias(aliases.CHAMPION)
    console.print(f"{len(names) * len(todo)} repairs from champion {champion}, {jobs} at a time "
                  + " ".join(f"{k}={v}" for k, v in meta.items()))

    def on_row(r: SweepRow) -> None:
        console.print(f"{r.domain} seed {r.seed}: {r.champion:.4f} -> {r.challenger:.4f} ({r.gain:+.4f}) "
                      f"in {r.seconds} s")
        if rnd is not None and meta["phase"] == "confirm":  # recorded as it lands: a crash cannot un-run a seed
            reg.record(rnd, r.domain, r.seed, meta["frozen_commit"], r.model_dump(exclude={"domain", "seed"}),
                       method)
            protocol.save(reg, reg_path)

    rows = sweep(names, todo, jobs=jobs, original=original, on_row=on_row, trainer=trainer, adaptation=adapt,
                 max_steps=max_steps)
    summary = summarize(rows, bar)
    if as_json:
        _echo({"champion": champion, "bar": bar, "seeds": todo, **meta, "rows": [r.model_dump() for r in rows],
               "summary": [s.model_dump() for s in summary]}, True)
        return
    typer.echo(" ".join(f"{k}: {v}" for k, v in meta.items()) + f"; seeds {seeds}; champion {champion}\n")
    typer.echo("| domain | seed | champion | challenger | gain | original drop | promotable | seconds |")
    typer.echo("|---|---|---|---|---|---|---|---|")
    for r in rows:
        typer.echo(f"| {r.domain} | {r.seed} | {r.champion:.4f} | {r.challenger:.4f} | {r.gain:+.4f} | "
                   f"{r.original_drop:+.4f} | {r.promotable} | {r.seconds} |")
    typer.echo(f"\n| domain | runs | mean gain | worst gain | gain >= {bar:g} | worst original drop | mean seconds |")
    typer.echo("|---|---|---|---|---|---|---|")
    for s in summary:
        typer.echo(f"| {s.domain} | {s.runs} | {s.mean_gain:+.4f} | {s.worst_gain:+.4f} | {s.reached} of {s.runs} | "
                   f"{s.max_original_drop:+.4f} | {s.mean_seconds} |")


def bench_study(
    domains: str = typer.Option(..., help="Comma-separated domains (never a locked confirm domain)."),
    seeds: str = typer.Option("100", help="Split seeds: N, A-B or a comma-separated mix."),
    variants: str = typer.Option("default", help="Adaptations (ml/adapt.py VARIANTS, or `default`: what training "
                                 "uses now), comma-separated."),
    sizes: str = typer.Option("all", help="Feedback queries to train on, e.g. 10,20,40,all (the learning curve)."),
    original: str = typer.Option("scifact", help="Original domain (its train queries are the gate's reference)."),
    registry: Path = typer.Option(None, help="The confirm registry (default docs/data/confirm_registry.json)."),
) -> None:
    """The expert's held-out gain per adaptation variant and feedback size, fitted in process (no SHAP, no
    registration, no SciFact evaluation); one JSON line per fit."""
    from autooptimizer.errors import InputError
    from autooptimizer.ml import protocol
    from autooptimizer.ml.adapt import variants as named
    from autooptimizer.ml.repair_study import study
    from autooptimizer.ml.repair_sweep import parse_seeds

    names = _items(domains, "--domains")
    protocol.load(registry or protocol.default_path()).check_develop(names)
    table = named(_items(variants, "--variants"))
    try:
        todo = [None if x == "all" else int(x) for x in _items(sizes, "--sizes")]  # read as the other lists
    except ValueError as exc:
        raise InputError(f"Unreadable sizes {sizes!r}.", "Write feedback sizes as numbers or `all`, e.g. "
                         "10,20,40,all.") from exc
    for d in names:
        for s in parse_seeds(seeds):
            for row in study(d, s, table, todo, original=original):
                typer.echo(row.model_dump_json())


def bench_train_throughput(
    steps: int = typer.Option(6, min=2, help="Timed training steps (after one warm-up step)."),
    batch_size: int = typer.Option(16, min=2),
) -> None:
    """Training samples/s of the bi-encoder MNRL step on this machine's device (CUDA if present, else CPU)."""
    from autooptimizer.ml.throughput import measure

    typer.echo(json.dumps(measure(steps=steps, batch_size=batch_size), indent=2))


def register(app: typer.Typer, bench: typer.Typer) -> None:
    """Add this area's commands to the root app and its benchmarks to `autoopt bench`."""
    app.add_typer(data_app, name="data")
    app.command("diagnose")(diagnose_cmd)
    app.command("augment")(augment_cmd)
    app.command("train")(train_cmd)
    app.command("eval")(eval_cmd)
    app.command("repair")(repair_cmd)
    bench.command("repair")(bench_repair)
    bench.command("study")(bench_study)
    bench.command("train-throughput")(bench_train_throughput)
