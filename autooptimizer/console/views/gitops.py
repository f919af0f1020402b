"""The GitOps desired state, read-only: a cycle's deploy commits with their diffs, and the patch at HEAD.

Reads the repository the loop pushes to (the local bare repo under AUTOOPT_HOME, or the working clone when
AUTOOPT_GITOPS_REMOTE points elsewhere) with plain `git log` / `git show`. It deliberately does not go through
`GitOpsRepo.log()` / `read_patch()`: those first `ensure()` the clone, which fetches and `reset --hard`s the working
tree a running cycle may be writing to (the repo is not thread-safe; the cycle lock serialises its writers, and a
page view must not become one).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import yaml
from pydantic import BaseModel, Field

from autooptimizer.settings import Settings


class CommitView(BaseModel):
    sha: str
    subject: str
    author_time: float
    cycle_id: str | None = None
    reverts: list[str] = Field(default_factory=list)
    diff: str = ""


class DesiredState(BaseModel):
    revision: str | None = None
    patch: dict[str, object] | None = None
    error: str | None = None


def _repo(settings: Settings) -> Path | None:
    from autooptimizer.loop.gitops import GitOpsRepo

    repo = GitOpsRepo(settings, settings.env)
    where = Path(repo.remote) if repo.local_bare else repo.checkout
    return where if where.exists() else None


def _git(where: Path, *args: str) -> str:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    proc = subprocess.run(["git", "--no-pager", *args], cwd=where, env=env, capture_output=True, text=True,
                          timeout=15)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip() or f"git {args[0]} failed")
    return proc.stdout


def _rel(settings: Settings) -> str:
    return f"envs/{settings.env}/helm_patch.yaml"


def cycle_commits(settings: Settings, cycle_id: str, limit: int = 200) -> tuple[list[CommitView], str | None]:
    """The env's deploy commits carrying `Cycle-Id: <cycle_id>`, oldest first, each with its diff; or an error."""
    where = _repo(settings)
    if where is None:
        return [], None
    try:
        raw = _git(where, "log", f"-{limit}", "--format=%H%x1f%s%x1f%at%x1f%b%x1e", "main", "--", _rel(settings))
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        return [], f"the GitOps repository could not be read: {exc}"
    out = []
    for rec in filter(None, (r.strip() for r in raw.split("\x1e"))):
        sha, subject, at, body = (rec.split("\x1f") + ["", "", ""])[:4]
        found = re.search(r"^Cycle-Id: (\S+)", body, re.M)
        if not found or found.group(1) != cycle_id:
            continue
        diff = _git(where, "show", "--format=", "--no-color", sha, "--", _rel(settings))
        out.append(CommitView(sha=sha, subject=subject, author_time=float(at or 0), cycle_id=cycle_id,
                              reverts=re.findall(r"This reverts commit ([0-9a-f]{40})", body), diff=diff))
    return list(reversed(out)), None


def desired_state(settings: Settings) -> DesiredState:
    """The patch the env's HEAD commit asks for (what GitOps wants served)."""
    where = _repo(settings)
    if where is None:
        return DesiredState(error="no GitOps repository yet (no cycle has deployed)")
    try:
        sha = _git(where, "rev-parse", "main").strip()
        text = _git(where, "show", f"main:{_rel(settings)}")
        data = yaml.safe_load(text)
    except (RuntimeError, OSError, subprocess.SubprocessError, yaml.YAMLError) as exc:
        return DesiredState(error=f"no desired state for {settings.env}: {exc}")
    search = data.get("search") if isinstance(data, dict) else None
    return DesiredState(revision=sha, patch=search if isinstance(search, dict) else data)
