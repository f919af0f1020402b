"""Leave-one-domain-out: a confirm domain cannot be used by a develop (or plain) run until its confirm runs are in, a
confirm run needs committed code (its commit is recorded and frozen) and never re-runs a (domain, seed) pair."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from autooptimizer.errors import InputError
from autooptimizer.ml import protocol
from autooptimizer.ml.protocol import Registry


def test_declared_confirm_domains_are_locked_for_development() -> None:
    reg = Registry()
    rnd = reg.declare(["cran", "cisi"], ["lisa", "npl"], "c0")
    assert (rnd.name, rnd.confirm, reg.locked()) == ("A", ["lisa", "npl"], {"lisa": "A", "npl": "A"})
    reg.check_develop(["cran", "med"])  # other domains are fine
    with pytest.raises(InputError, match=r"npl \(round A\) is a confirm domain"):
        reg.check_develop(["cran", "npl"])
    with pytest.raises(InputError, match="both a develop and a confirm"):
        reg.declare(["lisa"], ["lisa", "med"], "c0")
    assert reg.declare(["cran", "cisi"], ["npl", "lisa"], "c1") is rnd  # same round, not a second one


def test_confirm_runs_are_frozen_fresh_and_unlock_the_domains() -> None:
    reg = Registry()
    with pytest.raises(InputError, match="No round declares lisa"):
        reg.check_confirm(["lisa"], [1], "c1")
    rnd = reg.declare(["cran"], ["lisa"], "c0")
    assert reg.check_confirm(["lisa"], [200, 201], "c1") is rnd
    reg.record(rnd, "lisa", 200, "c1", {"gain": 0.04})
    assert rnd.frozen_commit == "c1" and not reg.locked()  # confirmed: lisa may be developed on now
    with pytest.raises(InputError, match="lisa seed 200"):
        reg.check_confirm(["lisa"], [201, 200], "c1")
    with pytest.raises(InputError, match="frozen at commit c1"):
        reg.check_confirm(["lisa"], [202], "c2")
    # round B rotates: cran was developed on in round A, so its confirm runs are marked as not untouched
    rb = reg.declare(["lisa"], ["cran"], "c3")
    assert rb.name == "B" and reg.locked() == {"cran": "B"}
    assert reg.record(rb, "cran", 300, "c3", {}).touched_before
    assert not rnd.runs[0].touched_before


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=repo, check=True,
                   capture_output=True)


def test_code_commit_refuses_uncommitted_code(tmp_path: Path) -> None:
    (tmp_path / "autooptimizer").mkdir()
    (tmp_path / "autooptimizer" / "x.py").write_text("a = 1\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-qm", "x")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert protocol.code_commit(tmp_path) == head
    (tmp_path / "docs.md").write_text("untracked, not code\n")
    assert protocol.code_commit(tmp_path) == head
    (tmp_path / "autooptimizer" / "x.py").write_text("a = 2\n")
    with pytest.raises(InputError, match="uncommitted changes"):
        protocol.code_commit(tmp_path)
    assert protocol.code_commit(tmp_path, require_clean=False) == head


def test_cli_enforces_the_split_end_to_end(ml_world: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from autooptimizer.cli.app import app
    from autooptimizer.search.sample_data import write_tiny_domain

    write_tiny_domain(ml_world["data"] / "conf")
    reg = tmp_path / "registry.json"
    monkeypatch.setattr(protocol, "code_commit", lambda repo=None, require_clean=True: "f" * 40)
    run = CliRunner()
    base = ["bench", "repair", "--original", "orig", "--bar", "0", "--registry", str(reg)]

    declared = run.invoke(app, [*base, "--develop", "dom", "--confirm", "conf", "--seeds", "1"])
    assert declared.exit_code == 0, declared.output
    assert "| dom | 1 |" in declared.stdout and "| conf |" not in declared.stdout  # only develop domains ran
    for cmd in (["--develop", "conf"], ["--domains", "dom,conf"]):  # a locked confirm domain is refused
        bad = run.invoke(app, [*base, *cmd, "--seeds", "2"])
        assert isinstance(bad.exception, InputError) and "conf (round A) is a confirm domain" in str(bad.exception)

    confirmed = run.invoke(app, [*base, "--confirm", "conf", "--seeds", "5", "--json"])
    assert confirmed.exit_code == 0, confirmed.output
    out = json.loads(confirmed.stdout)
    assert (out["phase"], out["frozen_commit"], out["seeds"]) == ("confirm", "f" * 40, [5])
    saved = json.loads(reg.read_text())["rounds"][0]
    assert saved["frozen_commit"] == "f" * 40
    assert [(r["domain"], r["seed"], r["figures"]["gain"]) for r in saved["runs"]] == [
        ("conf", 5, out["rows"][0]["gain"])]
    again = run.invoke(app, [*base, "--confirm", "conf", "--seeds", "4-5"])
    assert isinstance(again.exception, InputError) and "conf seed 5" in str(again.exception)
    assert saved["method"] == {"trainer": "ltr", "adaptation": "default", "max_steps": None}
    other = run.invoke(app, [*base, "--confirm", "conf", "--seeds", "6", "--adapt", "pq_crop100"])
    assert isinstance(other.exception, InputError) and "adaptation 'pq_crop100'" in str(other.exception)


def test_the_in_process_study_refuses_a_locked_confirm_domain(tmp_path: Path) -> None:
    from autooptimizer.cli.app import app

    reg = tmp_path / "registry.json"
    reg_doc = Registry()
    reg_doc.declare(["cran"], ["npl"], "c0")
    protocol.save(reg_doc, reg)
    out = CliRunner().invoke(app, ["bench", "study", "--domains", "med,npl", "--registry", str(reg)])
    assert isinstance(out.exception, InputError) and "npl (round A) is a confirm domain" in str(out.exception)


def test_the_study_reads_variants_as_it_reads_domains_and_names_the_valid_ones(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--variants "default, prior_rm3"` is two variants, as `--domains "med, cran"` is two domains; an unknown one
    fails before any fit, naming the valid ones."""
    from autooptimizer.cli.app import app
    from autooptimizer.ml import repair_study
    from autooptimizer.ml.adapt import VARIANTS

    reg = tmp_path / "registry.json"
    protocol.save(Registry(), reg)
    seen: list[list[str]] = []
    monkeypatch.setattr(repair_study, "study", lambda d, s, variants, *a, **k: seen.append(list(variants)) or [])
    base = ["bench", "study", "--domains", "med", "--registry", str(reg), "--sizes", "10"]
    out = CliRunner().invoke(app, [*base, "--variants", "default, prior_rm3,"])
    assert out.exit_code == 0, out.output
    assert seen == [["default", "prior_rm3"]]
    bad = CliRunner().invoke(app, [*base, "--variants", "prior_rm3,nosuch"])
    assert isinstance(bad.exception, InputError) and "Unknown adaptation 'nosuch'." in str(bad.exception)
    assert all(v in bad.exception.fix for v in ["default", *VARIANTS]) and seen == [["default", "prior_rm3"]]
    both = CliRunner().invoke(app, [*base, "--variants", "nosuch,none,Dense50"])  # every unknown name at once
    assert isinstance(both.exception, InputError) and "adaptations 'nosuch', 'Dense50'." in str(both.exception)


def test_a_round_names_each_domain_once_and_at_least_one() -> None:
    """An empty confirm set would be "confirmed" at once; a domain named twice would lock it under a name nobody types
    and run its confirm seeds twice."""
    reg = Registry()
    for develop, confirm, msg in ((["cran"], [], "No confirm domains"), ([], ["med"], "No develop domains"),
                                  (["cran"], ["med", "med"], "med named more than once as confirm"),
                                  (["cran", "cran"], ["med"], "cran named more than once as develop")):
        with pytest.raises(InputError, match=msg):
            reg.declare(develop, confirm, "c0")
    assert reg.rounds == []
    reg.declare(["cran"], ["med"], "c0")
    with pytest.raises(InputError, match="med named more than once"):
        reg.check_confirm(["med", "med"], [1], "c1")


@pytest.mark.parametrize(("args", "msg"), [
    (["--develop", "cran", "--confirm", ","], "--confirm ',' names nothing"),
    (["--confirm", " , "], "--confirm ' , ' names nothing"),
    (["--develop", ",", "--confirm", "cisi"], "--develop ',' names nothing"),
    (["--domains", ""], "--domains '' names nothing"),
    (["--domains", "cran, cran,med"], "--domains names cran more than once"),
    (["--develop", "cran", "--confirm", "med,med"], "--confirm names med more than once"),
])
def test_repair_lists_that_name_nothing_or_a_domain_twice_are_refused(tmp_path: Path, args: list[str],
                                                                       msg: str) -> None:
    """Before, these fell back to cran,cisi,med, ran nothing, or declared (even under --dry-run) a round with an empty
    or doubled confirm set."""
    from autooptimizer.cli.app import app

    reg = tmp_path / "registry.json"
    out = CliRunner().invoke(app, ["bench", "repair", "--registry", str(reg), "--dry-run", *args])
    assert isinstance(out.exception, InputError) and msg in str(out.exception)
    assert not reg.exists()


def test_the_study_refuses_an_empty_domain_list(tmp_path: Path) -> None:
    from autooptimizer.cli.app import app

    reg = tmp_path / "registry.json"
    protocol.save(Registry(), reg)
    for domains in ("", " , "):
        out = CliRunner().invoke(app, ["bench", "study", "--domains", domains, "--registry", str(reg)])
        assert isinstance(out.exception, InputError) and "--domains" in str(out.exception)


def test_the_study_reads_sizes_as_it_reads_the_other_lists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--sizes "10, all,"` is 10 and all (a trailing comma refused it before); a size named twice or a word that is
    not a number is refused before any fit."""
    from autooptimizer.cli.app import app
    from autooptimizer.ml import repair_study

    reg = tmp_path / "registry.json"
    protocol.save(Registry(), reg)
    seen: list[list[int | None]] = []
    monkeypatch.setattr(repair_study, "study", lambda d, s, variants, sizes, **k: seen.append(list(sizes)) or [])
    base = ["bench", "study", "--domains", "med", "--registry", str(reg), "--variants", "none", "--sizes"]
    out = CliRunner().invoke(app, [*base, "10, all,"])
    assert out.exit_code == 0, out.output
    assert seen == [[10, None]]
    for bad, needle in (("10,10", "more than once"), ("ten", "Unreadable sizes"), ("", "names nothing")):
        res = CliRunner().invoke(app, [*base, bad])
        assert isinstance(res.exception, InputError) and needle in str(res.exception), (bad, res.output)
    assert seen == [[10, None]]


def test_a_rounds_confirm_runs_all_run_one_method() -> None:
    """Trainer, adaptation and step limit are flags now, not code: without a frozen method, confirm seeds could be
    run with several methods on the same frozen commit and the best one reported (choosing on the confirm domains)."""
    reg = Registry()
    rnd = reg.declare(["cran"], ["lisa"], "c0")
    first = {"trainer": "bi_encoder", "adaptation": "none", "max_steps": 150}
    reg.check_confirm(["lisa"], [400], "c1", first)
    reg.record(rnd, "lisa", 400, "c1", {"gain": 0.03}, first)
    assert rnd.method == first
    with pytest.raises(InputError, match=r"adaptation.*pq_crop2000.*none"):
        reg.check_confirm(["lisa"], [401], "c1", first | {"adaptation": "pq_crop2000"})
    with pytest.raises(InputError, match="max_steps"):
        reg.check_confirm(["lisa"], [401], "c1", first | {"max_steps": 300})
    assert reg.check_confirm(["lisa"], [401], "c1", dict(first)) is rnd  # the same method adds seeds
