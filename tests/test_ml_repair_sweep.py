"""Repair sweeps: seed lists, the per-domain summary (known answers), and a real sweep on tiny data whose rows are
the repairs' own figures, in the same order with one or two worker processes."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from autooptimizer.errors import InputError
from autooptimizer.ml.repair_sweep import SweepRow, parse_seeds, summarize, sweep
from autooptimizer.settings import get_settings


def test_parse_seeds_reads_numbers_ranges_and_mixes() -> None:
    assert parse_seeds("0") == [0]
    assert parse_seeds("20-23") == [20, 21, 22, 23]
    assert parse_seeds("7-9, 1,4,8") == [1, 4, 7, 8, 9]


@pytest.mark.parametrize("bad", ["", "a", "3-", "1;2", "-4", "9-7"])
def test_parse_seeds_names_the_bad_part(bad: str) -> None:
    with pytest.raises(InputError) as err:
        parse_seeds(bad)
    assert "seed" in str(err.value).lower()


def _row(domain: str, seed: int, gain: float, drop: float = 0.0, seconds: float = 10.0) -> SweepRow:
    return SweepRow(domain=domain, seed=seed, champion=0.5, challenger=0.5 + gain, gain=gain, original_drop=drop,
                    promotable=gain > 0.01, seconds=seconds)


def test_summarize_known_answer() -> None:
    rows = [_row("med", 1, 0.03), _row("cran", 1, 0.05, seconds=20), _row("med", 2, -0.01, drop=0.004),
            _row("med", 3, 0.029), _row("cran", 2, 0.04, drop=-0.002, seconds=40)]
    med, cran = summarize(rows, bar=0.03)
    assert (med.domain, med.runs, med.reached, med.worst_gain, med.max_original_drop) == ("med", 3, 1, -0.01, 0.004)
    assert med.mean_gain == pytest.approx(0.0163, abs=1e-4)
    assert (cran.runs, cran.reached, cran.mean_gain, cran.max_original_drop, cran.mean_seconds) == (
        2, 2, 0.045, 0.0, 30.0)


def test_sweep_rows_are_the_repairs_figures_with_one_or_two_workers(ml_world: dict) -> None:
    one = sweep(["dom"], [1, 2], jobs=1, original="orig")
    assert [(r.domain, r.seed) for r in one] == [("dom", 1), ("dom", 2)]
    for r in one:
        assert r.gain == pytest.approx(r.challenger - r.champion, abs=1e-4) and 0 <= r.champion <= 1
    assert one[0].champion != one[1].champion  # different seeds hold out different queries
    two = sweep(["dom"], [2, 1], jobs=2, original="orig")  # worker processes, finishing in any order
    assert [r.model_dump(exclude={"seconds"}) for r in two] == [r.model_dump(exclude={"seconds"}) for r in one[::-1]]


def test_sweep_checks_every_domain_before_the_first_repair(ml_world: dict) -> None:
    from autooptimizer.errors import ConfigError

    with pytest.raises(ConfigError, match="nope"):
        sweep(["dom", "nope"], [1], original="orig")
    repairs = get_settings().home / "repairs"
    assert not repairs.exists() or not any(repairs.iterdir())


def test_cli_prints_rows_and_summary(ml_world: dict) -> None:
    from autooptimizer.cli.app import app

    args = ["bench", "repair", "--domains", "dom", "--seeds", "1", "--bar", "0", "--original", "orig"]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    assert "| dom | 1 |" in out.stdout and "| dom | 1 | " in out.stdout.split("mean gain")[1]
    bad = CliRunner().invoke(app, ["bench", "repair", "--seeds", "x"])
    assert isinstance(bad.exception, InputError) and "unreadable part 'x'" in str(bad.exception)


@pytest.mark.parametrize(("args", "needle"), [
    (["--trainer", "nope"], "Cannot train nope"),
    (["--adapt", "pq_cropp"], "Unknown adaptation 'pq_cropp'"),
    (["--trainer", "bi_encoder", "--adapt", "bm25"], "ltr trainer only"),
    (["--max-steps", "50"], "the ltr trainer has none"),  # ltr (the default) would ignore it, yet record it
    (["--trainer", "bi_encoder", "--max-steps", "1000000"], "max_steps"),  # the train tool's limit is 100,000
])
def test_a_bad_method_is_refused_before_a_round_is_declared(ml_world: dict, tmp_path: Path, args: list[str],
                                                            needle: str) -> None:
    from autooptimizer.cli.app import app

    reg = tmp_path / "registry.json"
    out = CliRunner().invoke(app, ["bench", "repair", "--develop", "dom", "--confirm", "other", "--original", "orig",
                                   "--registry", str(reg), *args])
    assert isinstance(out.exception, InputError) and needle in str(out.exception)
    assert not reg.exists()  # no round declared, no confirm domain locked by a run that could not start


def test_a_sweep_row_names_its_method(ml_world: dict) -> None:
    rows = sweep(["dom"], [1], original="orig", trainer="bi_encoder", adaptation="none", max_steps=1)
    assert (rows[0].trainer, rows[0].adaptation, rows[0].max_steps) == ("bi_encoder", "none", 1)  # a confirm row's


def test_parallel_repairs_from_a_fresh_home_share_one_mlflow_store(ml_world: dict) -> None:
    """Two workers must not each build a new home's MLflow schema at once (`duplicate column name: step`, seen on
    the GPU rehearsal): the sweep creates the store before it starts them."""
    store = get_settings().home / "mlflow" / "mlflow.db"
    assert not store.exists()  # a fresh home: no MLflow store yet
    rows = sweep(["dom"], [1, 2], jobs=2, original="orig", trainer="ltr")
    assert [(r.domain, r.seed) for r in rows] == [("dom", 1), ("dom", 2)] and store.is_file()
    from autooptimizer.ml import model_registry

    versions = model_registry.client().search_model_versions(f"name='{model_registry.REGISTERED_MODEL}'")
    trained = [v for v in versions if v.tags.get("autoopt_version", "").startswith("ltr-")]
    assert len(trained) == 2  # each worker registered its challenger in the one store (beside the bootstrap's)


def test_workers_end_with_a_killed_sweep(tmp_path: Path) -> None:
    """A sweep killed by SIGKILL (or `timeout`) must not leave its workers asleep as orphans: they held 2.5 GB each
    for 40 minutes after a killed `bench repair --jobs 2`."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from autooptimizer.infra.processes import pid_alive

    script = ("import time\nfrom autooptimizer.ml.repair_sweep import worker_pool\n"
              "pool = worker_pool(2)\nfuts = [pool.submit(time.sleep, 600) for _ in range(2)]\n"
              "time.sleep(1)\nprint(*pool._processes, flush=True)\ntime.sleep(600)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    workers = [int(p) for p in parent.stdout.readline().split()]
    assert len(workers) == 2 and all(pid_alive(p) for p in workers)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 30
    while any(pid_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [p for p in workers if pid_alive(p)]
    for p in left:  # do not leak them from the test either
        os.kill(p, signal.SIGKILL)
    assert not left, f"workers {left} outlived their killed parent"


def test_a_failed_repair_ends_the_running_ones(tmp_path: Path) -> None:
    """When one repair raises, the sweep raised at once but the process then sat until every running repair had
    finished (the pool's exit joins its workers), work it throws away: minutes for a CPU repair of npl. The running
    workers are ended with the failure."""
    from support.pool_tasks import fail_once_started, sleep_after_writing_pid

    from autooptimizer.infra.processes import pid_alive
    from autooptimizer.ml.repair_sweep import run_pooled

    pid_file = tmp_path / "sleeper.pid"
    calls = [(sleep_after_writing_pid, (str(pid_file), 600)), (fail_once_started, (str(pid_file),))]
    with pytest.raises(ValueError, match="this split failed"):
        run_pooled(calls, jobs=2, on_result=lambda _r: None)
    sleeper = int(pid_file.read_text())
    alive = pid_alive(sleeper)
    if alive:
        import os
        import signal

        os.kill(sleeper, signal.SIGKILL)  # do not leak it from the test
    assert not alive, "the running repair outlived the sweep's failure"


def test_pooled_calls_return_every_result(tmp_path: Path) -> None:
    from support.pool_tasks import sleep_after_writing_pid

    from autooptimizer.ml.repair_sweep import run_pooled

    got: list[float] = []
    calls = [(sleep_after_writing_pid, (str(tmp_path / f"{i}.pid"), 0.1 * i)) for i in range(3)]
    assert sorted(run_pooled(calls, jobs=2, on_result=got.append)) == [0.0, 0.1, 0.2] and sorted(got) == [0, 0.1, 0.2]
