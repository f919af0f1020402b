"""Failure mode 2: protected objects are protected on every path.

A world with one version per protected role (real aliases file, real GitOps repository with desired states in three
envs, a running cycle's journaled safe point), then every tool that can touch a version x every protected role,
through the real registry and PDP, in every env. The reported input is `delete_model` on gold's version in dev.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.protected_world import deploy_protected_history

from autooptimizer.policies.audit import AuditLog
from autooptimizer.search import aliases, model_store
from autooptimizer.settings import get_settings
from autooptimizer.testing import make_versions
from autooptimizer.tools import load_all_tools
from autooptimizer.tools.protection import protected_roles

ENVS = ("dev", "staging", "prod")
# version -> the role that protects it
PROTECTED = {"v-gold": "gold", "v-champ": "champion", "v-dev": "serving", "v-prod": "serving",
             "v-canary": "canary", "v-safe": "safe_point", "v-window": "rollback_window",
             "v-mid": "rollback_window"}


@pytest.fixture()
def world(autoopt_home: Path) -> dict:
    make_versions([*PROTECTED, "v-free", "v-old", "v-stage"])
    aliases.set_alias(aliases.GOLD, "v-gold")
    aliases.set_alias(aliases.CHAMPION, "v-champ")
    journal, running = deploy_protected_history(staging_version="v-stage")  # the roles: see its docstring
    return {"journal": journal, "cycle": running.id}


def test_each_version_holds_exactly_its_role(world) -> None:
    settings = get_settings()
    for version, role in PROTECTED.items():
        roles = protected_roles(version, settings, rollback_depth=5)
        assert role in roles, (version, roles)
    assert protected_roles("v-free", settings, 5) == set()
    assert protected_roles("v-old", settings, 5) == set(), "older than the rollback window: no longer protected"
    assert protected_roles("v-dev", settings, 5) == {"serving", "rollback_window"}


@pytest.mark.parametrize("env", ENVS)
@pytest.mark.parametrize("version", sorted(PROTECTED))
def test_delete_of_a_protected_version_is_denied_even_approved(world, env: str, version: str) -> None:
    reg = load_all_tools()
    res = reg.call("ml", "delete_model", {"version": version}, env=env)
    assert (res.decision, res.executed) == ("deny", False), res
    expected = "shared.gold-immutable" if version == "v-gold" else "shared.protected-objects"
    assert expected in res.policies
    assert model_store.exists(version)
    facts = [r for r in AuditLog().records() if r["kind"] == "decision"][-1]["context"]
    assert facts["target_checked"] is True
    assert facts[{"gold": "target_is_gold", "champion": "target_is_champion", "serving": "target_is_serving",
                  "canary": "target_is_canary", "safe_point": "target_is_safe_point",
                  "rollback_window": "target_in_rollback_window"}[PROTECTED[version]]] is True


@pytest.mark.parametrize("env", ENVS)
@pytest.mark.parametrize("version", [*sorted(PROTECTED), "v-free"])
def test_gold_cannot_be_re_aliased(world, env: str, version: str) -> None:
    res = load_all_tools().call("ml", "set_model_alias", {"alias": "gold", "version": version}, env=env)
    assert (res.decision, res.executed) == ("deny", False)
    assert "shared.gold-immutable" in res.policies
    assert aliases.get_alias(aliases.GOLD) == "v-gold"


@pytest.mark.parametrize("env", ENVS)
def test_unprotected_versions_follow_each_envs_delete_policy(world, env: str) -> None:
    reg = load_all_tools()
    for version in ("v-old", "v-free"):
        facts, rejected = reg.facts_for("delete_model", {"version": version})
        assert rejected is None and facts["target_checked"] and not any(
            v for k, v in facts.items() if k.startswith("target_i"))
    res = reg.call("ml", "delete_model", {"version": "v-free"}, env=env)
    if env == "dev":
        assert (res.decision, res.executed, res.error) == ("permit", True, None)
        assert not model_store.exists("v-free")
    else:
        assert (res.decision, res.executed) == ("needs_approval", False)
        assert model_store.exists("v-free")


def test_champion_alias_follows_what_git_serves(world) -> None:
    reg = load_all_tools()
    off = reg.call("ml", "set_model_alias", {"alias": "champion", "version": "v-free"}, env="dev")
    assert (off.decision, off.executed) == ("deny", False) and "shared.alias-follows-git" in off.policies
    other_env = reg.call("ml", "set_model_alias", {"alias": "champion", "version": "v-prod"}, env="dev")
    assert other_env.decision == "deny", "prod's stable is not what dev serves"
    on = reg.call("ml", "set_model_alias", {"alias": "champion", "version": "v-dev"}, env="dev")
    assert (on.decision, on.executed, on.error) == ("permit", True, None)
    assert aliases.get_alias(aliases.CHAMPION) == "v-dev"


def test_challenger_alias_stays_on_a_running_canary(world) -> None:
    aliases.set_alias(aliases.CHALLENGER, "v-canary")
    res = load_all_tools().call("ml", "set_model_alias", {"alias": "challenger", "version": "v-free"}, env="dev")
    assert (res.decision, res.executed) == ("deny", False) and "shared.alias-follows-git" in res.policies
    assert aliases.get_alias(aliases.CHALLENGER) == "v-canary"


def test_the_safe_point_stops_being_protected_when_its_cycle_ends(world) -> None:
    reg = load_all_tools()
    assert reg.call("ml", "delete_model", {"version": "v-safe"}, env="dev").decision == "deny"
    world["journal"].finish(world["cycle"], "finished", "no_action")
    facts, _ = reg.facts_for("delete_model", {"version": "v-safe"})
    assert facts["target_is_safe_point"] is False


@pytest.mark.parametrize("breakage", ["aliases", "gitops"])
def test_unreadable_protection_facts_deny(world, monkeypatch, breakage: str) -> None:
    if breakage == "aliases":
        aliases.aliases_path().write_text("{ corrupt")
    else:
        monkeypatch.setenv("AUTOOPT_GITOPS_REMOTE", str(get_settings().home / "no-such-repo.git"))
        get_settings.cache_clear()
    res = load_all_tools().call("ml", "delete_model", {"version": "v-free"}, env="dev")
    assert (res.decision, res.executed) == ("deny", False)
    assert res.policies == ["registry.facts-error"]
    assert model_store.exists("v-free")
