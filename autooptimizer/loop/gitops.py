"""GitOps: the desired deployment is a Helm values patch committed to git; a revert is a `git revert`.

By default the repository is a local bare repo under AUTOOPT_HOME (`gitops/deploy.git`), worked on through a clone
(`gitops/checkout`); `AUTOOPT_GITOPS_REMOTE` points it at any remote instead. Every write fetches first, commits
`envs/<env>/helm_patch.yaml` and pushes; commits carry a `Cycle-Id:` trailer so a cycle's commits can be found.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field

from autooptimizer.errors import ConfigError
from autooptimizer.settings import Settings

BRANCH = "main"
_IDENTITY = ["-c", "user.name=AutoOptimizer", "-c", "user.email=autooptimizer@localhost", "-c", "commit.gpgsign=false"]


class HelmPatch(BaseModel):
    """The values the loop controls; rendered as the chart's `search:` values (see deploy/helm)."""

    model_version: str = Field(min_length=1)
    canary_version: str | None = None
    canary_weight: float = Field(default=0.0, ge=0, le=1)
    replicas: int = Field(default=1, ge=1, le=64)
    rerank_depth: int | None = Field(default=None, ge=1)

    def values(self) -> dict[str, Any]:
        search: dict[str, Any] = {
            "modelVersion": self.model_version,
            "replicas": self.replicas,
            "canary": {
                "modelVersion": self.canary_version,
                "weight": self.canary_weight if self.canary_version else 0.0,
            },
        }
        if self.rerank_depth is not None:
            search["rerankDepth"] = self.rerank_depth
        return {"search": search}

    def to_yaml(self, header: str = "") -> str:
        head = "".join(f"# {line}\n" for line in header.splitlines() if line)
        return head + yaml.safe_dump(self.values(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> HelmPatch:
        doc: dict[str, Any] = yaml.safe_load(text) or {}
        raw: dict[str, Any] = doc.get("search") or {}
        canary: dict[str, Any] = raw.get("canary") or {}
        return cls(
            model_version=raw["modelVersion"],
            canary_version=canary.get("modelVersion"),
            canary_weight=float(canary.get("weight") or 0.0),
            replicas=int(raw.get("replicas", 1)),
            rerank_depth=raw.get("rerankDepth"),
        )


class Commit(BaseModel):
    sha: str
    subject: str
    cycle_id: str | None = None
    reverts: str | None = Field(default=None, description="the first commit this one undoes (a revert or a rollback)")
    reverted: list[str] = Field(default_factory=list[str], description="every commit this one undoes")


class GitError(ConfigError):
    """A git command failed; the message carries git's own output."""


class GitOpsRepo:
    """The deployment repository. Not thread-safe: the cycle lock serialises writers."""

    def __init__(self, settings: Settings, env: str) -> None:
        self.env = env
        self.remote = settings.gitops_remote or str(settings.home / "gitops" / "deploy.git")
        self.local_bare = settings.gitops_remote is None
        self.checkout = settings.home / "gitops" / "checkout"
        self.rel_path = f"envs/{self.env}/helm_patch.yaml"

    # -- plumbing -------------------------------------------------------------------------------------------------
    def _git(self, *args: str, cwd: Path | None = None, check: bool = True) -> str:
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
        proc = subprocess.run(["git", *_IDENTITY, *args], cwd=cwd or self.checkout, env=env,
                              capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            raise GitError(f"git {' '.join(args)} failed: {proc.stderr.strip() or proc.stdout.strip()}",
                           f"Check the GitOps repository {self.remote} (AUTOOPT_GITOPS_REMOTE).")
        return proc.stdout.strip()

    def ensure(self) -> None:
        """Create the local bare repo (with a first commit) and the working clone when missing; then sync."""
        if self.local_bare and not (Path(self.remote) / "HEAD").exists():
            if (self.checkout / ".git").exists():  # it existed before: lost or unreachable, never silently renewed
                raise GitError(f"The GitOps repository {self.remote} is missing or unreachable, although this home "
                               "has deployed from it before.", "Restore the repository (or point "
                               "AUTOOPT_GITOPS_REMOTE at it); nothing was committed.")
            Path(self.remote).mkdir(parents=True, exist_ok=True)
            self._git("init", "--bare", "-q", "-b", BRANCH, self.remote, cwd=Path(self.remote))
            seed = self.checkout.parent / "seed"
            seed.mkdir(parents=True, exist_ok=True)
            self._git("init", "-q", "-b", BRANCH, cwd=seed)
            (seed / "README.md").write_text("Desired state of the search service, written by AutoOptimizer.\n"
                                            "envs/<env>/helm_patch.yaml overrides the chart's values.\n")
            self._git("add", "README.md", cwd=seed)
            self._git("commit", "-q", "-m", "Initialise the GitOps repository", cwd=seed)
            self._git("push", "-q", self.remote, f"{BRANCH}:{BRANCH}", cwd=seed)
            _rmtree(seed)
        if not (self.checkout / ".git").exists():
            self.checkout.parent.mkdir(parents=True, exist_ok=True)
            self._git("clone", "-q", "-b", BRANCH, self.remote, str(self.checkout), cwd=self.checkout.parent)
        elif self._git("remote", "get-url", "origin", check=False) != self.remote:
            # a copied or moved AUTOOPT_HOME (or a changed AUTOOPT_GITOPS_REMOTE): the clone follows the setting,
            # never the repository of the home it was cloned in
            self._git("remote", "set-url", "origin", self.remote)
        self.sync()

    def sync(self) -> None:
        """Make the clone exactly the remote branch (drops any half-written local state from a crash)."""
        self._git("fetch", "-q", "origin", BRANCH)
        self._git("reset", "-q", "--hard", f"origin/{BRANCH}")
        self._git("clean", "-qfd")

    # -- reads ----------------------------------------------------------------------------------------------------
    def head(self) -> str:
        self.ensure()
        return self._git("rev-parse", "HEAD")

    def read_patch(self, rev: str = "HEAD", *, sync: bool = True) -> HelmPatch | None:
        """The env's patch at `rev` (None when the env has none there). `sync=False` skips the fetch, for a caller
        that has just synced and reads many revisions."""
        if sync:
            self.ensure()
        text = self._git("show", f"{rev}:{self.rel_path}", check=False)
        if not text or text.startswith("fatal"):
            return None
        return HelmPatch.from_yaml(text)

    def parent(self, rev: str) -> str | None:
        """The commit before `rev`, or None when `rev` is the repository's first commit."""
        self.ensure()
        out = self._git("rev-list", "--parents", "-n", "1", rev)
        parts = out.split()
        return parts[1] if len(parts) > 1 else None

    def commit_time(self, rev: str = "HEAD") -> float:
        """When `rev` was committed (Unix seconds)."""
        self.ensure()
        return float(self._git("log", "-1", "--format=%ct", rev))

    def resolve(self, rev: str) -> str | None:
        """The full sha of `rev`, or None when the repository has no such commit."""
        self.ensure()
        out = self._git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False)
        return out or None

    def log(self, limit: int = 20, *, sync: bool = True) -> list[Commit]:
        """The env's last `limit` deploy commits, newest first."""
        if sync:
            self.ensure()
        raw = self._git("log", f"-{limit}", "--format=%H%x1f%s%x1f%b%x1e", "--", self.rel_path)
        out: list[Commit] = []
        for rec in filter(None, (r.strip() for r in raw.split("\x1e"))):
            sha, subject, body = (rec.split("\x1f") + ["", ""])[:3]
            cyc = re.search(r"^Cycle-Id: (\S+)", body, re.M)
            undone = re.findall(r"This reverts commit ([0-9a-f]{40})", body)
            out.append(Commit(sha=sha, subject=subject, cycle_id=cyc and cyc.group(1),
                              reverts=undone[0] if undone else None, reverted=undone))
        return out

    # -- writes ---------------------------------------------------------------------------------------------------
    def commit_patch(self, patch: HelmPatch, message: str, cycle_id: str | None = None,
                     undoes: list[str] | None = None) -> str:
        """Commit the patch (no-op commit avoided: returns HEAD when nothing changed) and push; returns the sha.
        `undoes` names the commits this one rolls back (recorded as revert lines, so `revert_cycle` skips them)."""
        self.ensure()
        target = self.checkout / self.rel_path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(patch.to_yaml(header="Written by AutoOptimizer; see the Cycle-Id trailer"))
        self._git("add", self.rel_path)
        if not self._git("status", "--porcelain", "--", self.rel_path):
            return self._git("rev-parse", "HEAD")
        if undoes:
            message += "\n\n" + "\n".join(f"This reverts commit {sha}." for sha in undoes)
        self._git("commit", "-q", "-m", _message(message, cycle_id))
        return self._push()

    def revert(self, sha: str, reason: str, cycle_id: str | None = None) -> str:
        """`git revert` one commit and push; returns the new HEAD."""
        self.ensure()
        self._git("revert", "--no-edit", "--no-commit", sha)
        body = f"Revert {sha[:12]}: {reason}\n\nThis reverts commit {sha}."
        self._git("commit", "-q", "--allow-empty", "-m", _message(body, cycle_id))
        return self._push()

    def revert_cycle(self, cycle_id: str, reason: str) -> list[str]:
        """Revert, newest first, every commit of `cycle_id` that is not reverted yet. Idempotent."""
        commits = self.log(limit=200)
        reverted = {sha for c in commits for sha in c.reverted}
        todo = [c for c in commits if c.cycle_id == cycle_id and not c.reverted and c.sha not in reverted]
        return [self.revert(c.sha, reason, cycle_id) for c in todo]

    def _push(self) -> str:
        proc_err = ""
        for _ in range(3):
            try:
                self._git("push", "-q", "origin", f"HEAD:{BRANCH}")
                return self._git("rev-parse", "HEAD")
            except GitError as exc:  # the remote moved: replay our commit on top and retry
                proc_err = exc.problem
                self._git("pull", "-q", "--rebase", "origin", BRANCH)
        raise GitError(f"could not push to {self.remote}: {proc_err}", "Resolve the conflict in the GitOps repo.")


def _message(text: str, cycle_id: str | None) -> str:
    return text + (f"\n\nCycle-Id: {cycle_id}" if cycle_id else "")


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
