"""`autoopt bench dense-index` on the tiny domain: both searches run on the real encoder's vectors and are compared."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from autooptimizer.cli.app import app


def test_the_bench_compares_the_graph_with_the_exact_scan_on_every_query(ml_world: dict) -> None:
    from autooptimizer.search.beir import load_beir

    dom = load_beir(ml_world["data"] / "dom")
    out = CliRunner().invoke(app, ["bench", "dense-index", "--domains", "dom", "--k", "5", "--json"])
    assert out.exit_code == 0, out.output
    (row,) = json.loads(out.stdout[out.stdout.index("[\n") :])  # after the encoder's progress bar
    assert (row["domain"], row["docs"], row["queries"], row["k"]) == ("dom", len(dom.corpus), len(dom.queries), 5)
    assert row["recall"] == row["worst_recall"] == 1.0, "a graph over a few dozen documents misses none"
    assert row["exact_ms"] > 0 and row["graph_ms"] > 0 and row["ratio"] > 0


def test_no_domain_is_an_error_that_says_what_to_pass() -> None:
    out = subprocess.run([sys.executable, "-m", "autooptimizer", "bench", "dense-index", "--domains", " , "],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert "names no domain" in out.stderr and "--domains lisa,npl" in out.stderr and "Traceback" not in out.stderr


def test_a_domain_whose_vectors_are_not_cached_shows_their_encoding(ml_world: dict) -> None:
    """Vectors missing from the cache (another --max-seq-length, a domain never warmed) are encoded first: on npl that
    is minutes on the bench's one thread, and it ran with the progress bar off, so the command printed nothing."""
    out = CliRunner().invoke(app, ["bench", "dense-index", "--domains", "dom", "--k", "5", "--max-seq-length", "64"])
    assert out.exit_code == 0, out.output
    assert "encoding docs" in out.stderr and "| dom |" in out.stdout


def test_an_unknown_domain_fails_before_any_other_domain_is_measured(ml_world: dict) -> None:
    """`dom,nosuch` used to measure dom (encoder loaded, vectors read), then fail on nosuch, losing dom's row."""
    out = subprocess.run([sys.executable, "-m", "autooptimizer", "bench", "dense-index", "--domains", "dom,nosuch"],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert "Dataset nosuch not found" in out.stderr and "Traceback" not in out.stderr
    assert "encoding docs" not in out.stderr and "Loading weights" not in out.stderr, "failed before any work"
