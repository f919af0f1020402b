"""Leave-one-domain-out for `autoopt bench repair`: develop domains to choose methods on, confirm domains to measure
them once, on frozen code and on seeds never run before (issue 18).

A method chosen by looking at a domain's held-out halves measures fit to that domain as much as the method, so the
split is enforced, not promised. The record is a JSON file (`docs/data/confirm_registry.json` in a source checkout,
else AUTOOPT_HOME/confirm_registry.json; `--registry` names another) holding rounds:

    {"rounds": [{"name": "A", "develop": [...], "confirm": [...], "declared_commit": "...", "frozen_commit": null,
                 "runs": [{"domain": "lisa", "seed": 200, "commit": "...", "gain": 0.04, ...}]}]}

Rules (`Registry.check_develop`, `Registry.check_confirm`):
- a round is declared by a develop run that names its confirm domains; from then on those domains are locked: no
  develop (or plain `--domains`) run may use them, until their confirm runs exist;
- a confirm run needs a clean tree for the code (autooptimizer/, pyproject.toml): its commit is the frozen commit,
  the first confirm run of a round fixes it and later ones must run the same commit;
- a (confirm domain, seed) pair runs once: re-running it is refused, whatever the result was;
- the first confirm run also fixes the round's method (trainer, adaptation, step limit: flags, not code), and later
  confirm runs must use it: several methods tried on the confirm domains would choose on them.
A domain that an earlier round developed on may still be declared confirm later (the rotation needs it), but every
such run is marked `touched_before`: its figure is not an untouched-domain figure.
"""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from autooptimizer.errors import InputError

CODE_PATHS = ("autooptimizer", "pyproject.toml")  # what a frozen commit must hold unchanged


class ConfirmRun(BaseModel):
    domain: str
    seed: int
    commit: str
    at: str
    touched_before: bool = False
    figures: dict[str, Any] = Field(default_factory=dict)


class Round(BaseModel):
    name: str
    develop: list[str]
    confirm: list[str]
    declared_at: str
    declared_commit: str | None = None
    frozen_commit: str | None = None
    method: dict[str, Any] | None = Field(default=None, description="the first confirm run's trainer, adaptation "
                                          "and max_steps; None: no confirm run recorded one yet")
    runs: list[ConfirmRun] = Field(default_factory=list)

    def confirmed(self) -> bool:
        """Every confirm domain has at least one confirm run: its domains are unlocked for later development."""
        done = {r.domain for r in self.runs}
        return all(d in done for d in self.confirm)


def _distinct(domains: list[str], what: str) -> None:
    """A round's develop or confirm domains are a set: none, or one named twice, would declare a round nobody can
    confirm (an empty confirm set is confirmed at once) or run a confirm seed twice."""
    if not domains:
        raise InputError(f"No {what} domains given.", f"Name one or more {what} domains, comma-separated.")
    twice = sorted({d for d in domains if domains.count(d) > 1})
    if twice:
        raise InputError(f"{', '.join(twice)} named more than once as {what} domains.", "Name each domain once.")


class Registry(BaseModel):
    rounds: list[Round] = Field(default_factory=list)

    # -- reading ---------------------------------------------------------------------------------------------------
    def locked(self) -> dict[str, str]:
        """Confirm domains of rounds whose confirm runs are not all in: domain -> round name."""
        return {d: r.name for r in self.rounds if not r.confirmed() for d in r.confirm}

    def developed_before(self, domain: str, before: int | None = None) -> bool:
        """Whether any round (before index `before`) developed on `domain`."""
        return any(domain in r.develop for r in self.rounds[:before])

    def round_for(self, develop: list[str] | None, confirm: list[str]) -> Round | None:
        """The round whose confirm set is exactly `confirm` (and develop set `develop`, when given), latest first."""
        for r in reversed(self.rounds):
            if sorted(r.confirm) == sorted(confirm) and (develop is None or sorted(r.develop) == sorted(develop)):
                return r
        return None

    # -- the rules -------------------------------------------------------------------------------------------------
    def check_develop(self, domains: list[str]) -> None:
        """A develop (or plain) run may not touch a locked confirm domain."""
        locked = self.locked()
        bad = [d for d in domains if d in locked]
        if bad:
            names = ", ".join(f"{d} (round {locked[d]})" for d in bad)
            raise InputError(f"{names} {'is a confirm domain' if len(bad) == 1 else 'are confirm domains'} of a "
                             "round whose confirm runs are not in: developing on them would tune on the domains "
                             "the method is to be confirmed on.",
                             "Develop on other domains; run `autoopt bench repair --confirm ...` on frozen code "
                             "first, which unlocks them.")

    def declare(self, develop: list[str], confirm: list[str], commit: str | None) -> Round:
        """The round of (develop, confirm): the existing one, or a new one (confirm domains locked from now on)."""
        _distinct(develop, "develop")
        _distinct(confirm, "confirm")
        overlap = sorted(set(develop) & set(confirm))
        if overlap:
            raise InputError(f"{', '.join(overlap)} cannot be both a develop and a confirm domain.",
                             "Name each domain once: --develop for choosing methods, --confirm for measuring them.")
        existing = self.round_for(develop, confirm)
        if existing is not None and not existing.confirmed():
            return existing
        self.check_develop(develop)
        r = Round(name=chr(ord("A") + len(self.rounds)) if len(self.rounds) < 26 else f"R{len(self.rounds) + 1}",
                  develop=sorted(develop), confirm=sorted(confirm), declared_at=_now(), declared_commit=commit)
        self.rounds.append(r)
        return r

    def check_confirm(self, confirm: list[str], seeds: list[int], commit: str,
                      method: dict[str, Any] | None = None) -> Round:
        """The declared round these confirm domains belong to, if this run may go: the code is frozen at `commit`
        (the round's frozen commit once one exists), the `method` is the round's (once one is recorded), and no
        (domain, seed) pair ran before in any round."""
        _distinct(confirm, "confirm")
        r = self.round_for(None, confirm)
        if r is None:
            raise InputError(f"No round declares {', '.join(confirm)} as its confirm domains.",
                             "Declare the round before any tuning: `autoopt bench repair --develop D1,D2 --confirm "
                             f"{','.join(confirm)} --seeds ...` (develop runs only), then confirm on frozen code.")
        if r.frozen_commit is not None and r.frozen_commit != commit:
            raise InputError(f"Round {r.name} was frozen at commit {r.frozen_commit[:12]}, this code is "
                             f"{commit[:12]}: its confirm runs must all run the same code.",
                             f"Check out {r.frozen_commit[:12]} to add seeds, or declare a new round.")
        if r.method is not None and method is not None and r.method != method:
            diff = ", ".join(f"{k} {method.get(k)!r} (round: {r.method.get(k)!r})" for k in sorted(set(r.method) |
                             set(method)) if method.get(k) != r.method.get(k))
            raise InputError(f"Round {r.name}'s confirm runs use one method; this run differs: {diff}.",
                             f"Confirm with the round's method {r.method}, or declare a new round for another.")
        ran = {(run.domain, run.seed) for rr in self.rounds for run in rr.runs}
        again = [f"{d} seed {s}" for d in confirm for s in seeds if (d, s) in ran]
        if again:
            raise InputError(f"Confirm seeds already run: {', '.join(again[:6])}"
                             f"{' ...' if len(again) > 6 else ''}. A confirm figure is measured once.",
                             "Pick seeds never run before on these domains (the registry lists every run).")
        return r

    def record(self, r: Round, domain: str, seed: int, commit: str, figures: dict[str, Any],
               method: dict[str, Any] | None = None) -> ConfirmRun:
        r.frozen_commit = r.frozen_commit or commit
        r.method = r.method or method
        run = ConfirmRun(domain=domain, seed=seed, commit=commit, at=_now(), figures=figures,
                         touched_before=self.developed_before(domain, self.rounds.index(r)))
        r.runs.append(run)
        return run


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def default_path() -> Path:
    """docs/data/confirm_registry.json of the source checkout (committed with the code it froze), else the home's."""
    from autooptimizer.settings import get_settings

    repo = Path(__file__).resolve().parents[2]
    if (repo / "docs").is_dir() and (repo / "pyproject.toml").is_file():
        return repo / "docs" / "data" / "confirm_registry.json"
    return get_settings().home / "confirm_registry.json"


def load(path: Path) -> Registry:
    if not path.is_file():
        return Registry()
    try:
        return Registry.model_validate_json(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise InputError(f"The confirm registry {path} is unreadable: {exc}.",
                         "Restore it from git (`git checkout -- docs/data/confirm_registry.json`); never edit "
                         "runs out of it.") from exc


def save(reg: Registry, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(reg.model_dump(mode="json"), indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)


def code_commit(repo: Path | None = None, require_clean: bool = True) -> str:
    """HEAD of the repository holding the code; with `require_clean`, refuse when the code has uncommitted changes
    (a confirm figure must name the code that made it)."""
    root = repo or Path(__file__).resolve().parents[2]

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError) as exc:
            raise InputError(f"Cannot read the code's git commit in {root}: {exc}.",
                             "Run confirm runs from a git checkout of the project.") from exc

    commit = git("rev-parse", "HEAD")
    if require_clean:
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS)
        if dirty:
            raise InputError(f"The code has uncommitted changes ({dirty.splitlines()[0].strip()} ...): a confirm run "
                             "must run frozen, committed code.", "Commit (or stash) the changes, then rerun.")
    return commit
