"""The Cedar PDP: every row of the issue-3 policy table in dev, staging and prod, plus loading and context rules."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from autooptimizer.errors import ConfigError
from autooptimizer.policies.catalog import PACKAGE_DIR, load_catalog
from autooptimizer.policies.pdp import PDP, PolicyContext, get_pdp, load_all, reload_policies

ENVS = ("dev", "staging", "prod")
CATALOG = load_catalog()
READ_TOOLS = sorted(t for t, e in CATALOG.tools.items() if e.risk == "read")
GUARDED_TOOLS = sorted(t for t, e in CATALOG.tools.items() if e.risk != "read")
# The registry sets in_scope itself (true for an unscoped caller); these tables decide as an unscoped call does.
UNSCOPED = {"in_scope": True}
# A context under which every guarded tool would otherwise be allowed: proves the kill switch alone denies.
PERMISSIVE = {"approved": True, "ab_passed": True, "canary_weight": 0.1, "estimated_cost": 1.0,
              "budget_remaining": 5.0, "target_is_gold": False, "target_checked": True, "alias_consistent": True,
              **UNSCOPED}
CHECKED = {"target_checked": True}  # every protected-object fact was read, and none holds
PROTECTION_FACTS = ("target_is_gold", "target_is_champion", "target_is_serving", "target_is_canary",
                    "target_is_safe_point", "target_in_rollback_window")


def owner(tool: str) -> str:
    return CATALOG.tools[tool].owner


# (row, tool, agent, context, {env: (decision, policy that must be among the deciding ones)})
TABLE = [
    ("promote ab passed", "promote_model", "devops", {"ab_passed": True},
     {"dev": ("permit", "dev.promote"), "staging": ("needs_approval", "staging.promote-approval"),
      "prod": ("permit", "prod.promote")}),
    ("promote ab passed + approved", "promote_model", "devops", {"ab_passed": True, "approved": True},
     {"dev": ("permit", "dev.promote"), "staging": ("permit", "staging.promote-approved"),
      "prod": ("permit", "prod.promote")}),
    ("promote without ab", "promote_model", "devops", {},
     dict.fromkeys(ENVS, ("deny", "shared.promote-needs-ab"))),
    ("promote ab failed, approved", "promote_model", "devops", {"ab_passed": False, "approved": True},
     dict.fromkeys(ENVS, ("deny", "shared.promote-needs-ab"))),
    ("canary 0.5", "deploy_canary", "devops", {"canary_weight": 0.5},
     dict.fromkeys(ENVS, ("permit", "shared.change-by-owner"))),
    ("canary 0.2", "deploy_canary", "devops", {"canary_weight": 0.2},
     dict.fromkeys(ENVS, ("permit", "shared.change-by-owner"))),
    ("canary 0.51", "deploy_canary", "devops", {"canary_weight": 0.51},
     dict.fromkeys(ENVS, ("deny", "shared.canary-weight-cap"))),
    ("canary 0.50001 (rounds up, not down)", "deploy_canary", "devops", {"canary_weight": 0.50001},
     dict.fromkeys(ENVS, ("deny", "shared.canary-weight-cap"))),
    ("canary 1.0 approved", "deploy_canary", "devops", {"canary_weight": 1.0, "approved": True},
     dict.fromkeys(ENVS, ("deny", "shared.canary-weight-cap"))),
    ("canary weight missing", "deploy_canary", "devops", {},
     dict.fromkeys(ENVS, ("deny", "shared.canary-weight-cap"))),
    ("rollback", "rollback_deployment", "devops", {},
     dict.fromkeys(ENVS, ("permit", "shared.rollback"))),
    ("delete gold", "delete_model", "ml", {**CHECKED, "target_is_gold": True},
     dict.fromkeys(ENVS, ("deny", "shared.gold-immutable"))),
    ("delete gold approved", "delete_model", "ml", {**CHECKED, "target_is_gold": True, "approved": True},
     dict.fromkeys(ENVS, ("deny", "shared.gold-immutable"))),
    ("alias gold", "set_model_alias", "ml", {**CHECKED, "target_is_gold": True},
     dict.fromkeys(ENVS, ("deny", "shared.gold-immutable"))),
    ("alias gold approved", "set_model_alias", "ml", {**CHECKED, "target_is_gold": True, "approved": True},
     dict.fromkeys(ENVS, ("deny", "shared.gold-immutable"))),
    ("alias non-gold, in step with git", "set_model_alias", "ml", {**CHECKED, "alias_consistent": True},
     dict.fromkeys(ENVS, ("permit", "shared.set-alias"))),
    ("alias off git's desired state", "set_model_alias", "ml", {**CHECKED, "approved": True},
     dict.fromkeys(ENVS, ("deny", "shared.alias-follows-git"))),
    ("alias, protection facts missing", "set_model_alias", "ml", {"alias_consistent": True, "approved": True},
     dict.fromkeys(ENVS, ("deny", "shared.protection-unchecked"))),
    ("delete non-gold", "delete_model", "ml", CHECKED,
     {"dev": ("permit", "dev.delete-model"), "staging": ("needs_approval", "staging.delete-model-approval"),
      "prod": ("needs_approval", "prod.delete-model-approval")}),
    ("delete, protection facts missing", "delete_model", "ml", {"approved": True},
     dict.fromkeys(ENVS, ("deny", "shared.protection-unchecked"))),
    ("train over budget", "train_reranker", "ml", {"estimated_cost": 6.0, "budget_remaining": 5.0},
     dict.fromkeys(ENVS, ("needs_approval", "shared.train-over-budget"))),
    ("train cost unknown", "train_reranker", "ml", {"budget_remaining": 5.0},
     dict.fromkeys(ENVS, ("needs_approval", "shared.train-over-budget"))),
    ("train within budget", "train_reranker", "ml", {"estimated_cost": 5.0, "budget_remaining": 5.0},
     dict.fromkeys(ENVS, ("permit", "shared.train-within-budget"))),
    ("train over budget approved", "train_reranker", "ml",
     {"estimated_cost": 6.0, "budget_remaining": 5.0, "approved": True},
     dict.fromkeys(ENVS, ("permit", "shared.train-approved"))),
    ("not owner: ml promotes", "promote_model", "ml", {"ab_passed": True, "approved": True},
     dict.fromkeys(ENVS, ("deny", "shared.owner-only"))),
    ("not owner: devops reads metrics", "query_metrics", "devops", {},
     dict.fromkeys(ENVS, ("deny", "shared.owner-only"))),
    ("supervisor owns nothing", "rollback_deployment", "supervisor", {},
     dict.fromkeys(ENVS, ("deny", "shared.owner-only"))),
    ("unknown tool", "drop_database", "ml", {"approved": True}, dict.fromkeys(ENVS, ("deny", "pdp.unknown-tool"))),
    ("unknown agent", "query_metrics", "mallory", {"approved": True},
     dict.fromkeys(ENVS, ("deny", "pdp.unknown-agent"))),
    ("unknown agent impersonating by name", "query_metrics", "metrics ", {},
     dict.fromkeys(ENVS, ("deny", "pdp.unknown-agent"))),
]


@pytest.mark.parametrize("env", ENVS)
@pytest.mark.parametrize("row", TABLE, ids=[r[0] for r in TABLE])
def test_policy_table(env: str, row: tuple) -> None:
    _, tool, agent, context, expected = row
    decision, policy = expected[env]
    got = get_pdp(env).decide(agent, tool, {**UNSCOPED, **context})
    assert got.decision == decision, got
    assert policy in got.policies, got
    assert got.reason and "policy" not in got.reason.split()[0]  # words, not ids


@pytest.mark.parametrize("env", ENVS)
@pytest.mark.parametrize("tool", READ_TOOLS)
def test_read_tools_by_owner_permit(env: str, tool: str) -> None:
    got = get_pdp(env).decide(owner(tool), tool, {})
    assert (got.decision, got.policies) == ("permit", ["shared.read-by-owner"])
    # the kill switch leaves read tools alone
    assert get_pdp(env).decide(owner(tool), tool, {"kill_switch": True}).decision == "permit"


@pytest.mark.parametrize("env", ENVS)
@pytest.mark.parametrize("tool", GUARDED_TOOLS)
def test_kill_switch_denies_every_change_and_critical_tool(env: str, tool: str) -> None:
    pdp = get_pdp(env)
    assert pdp.decide(owner(tool), tool, PERMISSIVE).decision == "permit"  # the switch is what flips it
    got = pdp.decide(owner(tool), tool, {**PERMISSIVE, "kill_switch": True})
    assert got.decision == "deny"
    assert "shared.kill-switch" in got.policies
    assert "kill switch" in got.reason


@pytest.mark.parametrize("env", ENVS)
@pytest.mark.parametrize("tool", sorted(CATALOG.tools))
def test_no_agent_but_the_owner_may_call_a_tool(env: str, tool: str) -> None:
    for agent in CATALOG.agents:
        if agent != owner(tool):
            assert get_pdp(env).decide(agent, tool, PERMISSIVE).decision == "deny", agent


def test_missing_context_keys_are_false_never_true() -> None:
    pdp = get_pdp("staging")
    bools = {k: v for k, v in PolicyContext().model_dump().items() if isinstance(v, bool)}
    numbers = {k: v for k, v in PolicyContext().model_dump().items() if not isinstance(v, bool)}
    assert bools and set(bools.values()) == {False}
    assert numbers == {"canary_weight": None, "budget_remaining": None, "estimated_cost": None}
    assert pdp.decide("devops", "promote_model", None).decision == "deny"
    assert pdp.decide("devops", "promote_model", {}).decision == "deny"
    for tool in ("delete_model", "set_model_alias"):  # no facts at all: protection cannot be assumed
        got = pdp.decide("ml", tool, {"approved": True, **UNSCOPED})
        assert got.decision == "deny" and "shared.protection-unchecked" in got.policies


@pytest.mark.parametrize("env", ENVS)
@pytest.mark.parametrize("fact", PROTECTION_FACTS)
def test_a_protected_version_cannot_be_deleted_even_approved(env: str, fact: str) -> None:
    got = get_pdp(env).decide("ml", "delete_model", {**UNSCOPED, **CHECKED, fact: True, "approved": True})
    assert got.decision == "deny"
    assert ({"shared.protected-objects", "shared.gold-immutable"} & set(got.policies)), got
    # the same version, once it holds no protected role, is deletable (dev) or asks a human (staging, prod)
    assert get_pdp(env).decide("ml", "delete_model", {**UNSCOPED, **CHECKED}).decision in ("permit", "needs_approval")


@pytest.mark.parametrize("bad", [{"approved": "true"}, {"ab_passed": 1}, {"canary_weight": "0.1"},
                                 {"canary_weight": float("nan")}, {"estimated_cost": float("inf")},
                                 {"is_admin": True}, {"canary_weight": 1e20}])
def test_malformed_context_is_denied_with_a_reason(bad: dict) -> None:
    got = get_pdp("dev").decide("devops", "deploy_canary", {"canary_weight": 0.1, **bad})
    assert got.decision == "deny"
    assert got.policies == ["pdp.invalid-context"]
    assert "context" in got.reason


def test_decimal_rounding_is_conservative() -> None:
    ctx = PolicyContext(canary_weight=0.50001, estimated_cost=1.00001, budget_remaining=1.00009).to_cedar()
    assert ctx["canary_weight"]["__extn"]["arg"] == "0.5001"
    assert ctx["estimated_cost"]["__extn"]["arg"] == "1.0001"
    assert ctx["budget_remaining"]["__extn"]["arg"] == "1.0000"
    # 1.00001 cost vs 1.00009 budget is within budget, but rounding towards safety makes it need approval
    got = get_pdp("dev").decide("ml", "train_reranker", {"estimated_cost": 1.00001, "budget_remaining": 1.00009,
                                                         **UNSCOPED})
    assert got.decision == "needs_approval"


def test_every_env_loads_and_shares_the_shared_policies() -> None:
    pdps = load_all()
    assert set(pdps) == set(ENVS)
    for pdp in pdps.values():
        assert {"shared.owner-only", "shared.kill-switch", "shared.gold-immutable"} <= set(pdp.policies)
    assert "staging.promote-approval" not in pdps["prod"].policies


# --- loading: a broken file stops startup, naming the file and the reason ------------------------------------
def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + "\n" + text)


@pytest.mark.parametrize("broken, file, needle", [
    ('permit (principal, action == Action::"call", resource) when { ', "prod.cedar", "does not parse"),
    ('@id("prod.x") @reason("r") permit (principal, action == Action::"call", resource) '
     'when { context.is_admin };', "prod.cedar", "schema validation"),
    ('@id("prod.y") @reason("r") permit (principal, action == Action::"call", resource == Tool::"promte_model");',
     "prod.cedar", "promte_model"),
    ('@reason("r") permit (principal, action == Action::"call", resource);', "shared.cedar", "no @id"),
    ('@id("prod.z") permit (principal, action == Action::"call", resource);', "prod.cedar", "no @reason"),
    ('@id("shared.rollback") @reason("dup") permit (principal, action == Action::"call", resource);',
     "prod.cedar", "appears in both"),
    ('@id("prod.w") @reason("r") @decision("needs_approval") forbid (principal, action, resource);',
     "prod.cedar", "@decision"),
])
def test_broken_policy_file_stops_loading_naming_file_and_reason(policy_copy: Path, broken: str, file: str,
                                                                  needle: str) -> None:
    _append(policy_copy / "cedar" / file, broken)
    with pytest.raises(ConfigError) as err:
        PDP("prod")
    assert file in err.value.problem
    assert needle in err.value.problem


def test_broken_schema_or_catalog_is_named(policy_copy: Path) -> None:
    (policy_copy / "catalog.yaml").write_text("agents: [ml]\ntools:\n  train_reranker: {owner: devops, risk: read}\n")
    with pytest.raises(ConfigError, match="catalog.yaml"):
        PDP("dev")
    shutil.copy(PACKAGE_DIR / "catalog.yaml", policy_copy / "catalog.yaml")
    (policy_copy / "cedar" / "schema.cedarschema").write_text("entity Agent {")
    with pytest.raises(ConfigError, match="schema.cedarschema"):
        PDP("dev")


def test_operator_policy_change_takes_effect_after_reload(policy_copy: Path) -> None:
    passed = {"ab_passed": True, **UNSCOPED}
    assert get_pdp("prod").decide("devops", "promote_model", passed).decision == "permit"
    prod = policy_copy / "cedar" / "prod.cedar"
    prod.write_text(prod.read_text().replace('@id("prod.promote")', '@id("prod.promote")\n@decision("needs_approval")'))
    assert get_pdp("prod").decide("devops", "promote_model", passed).decision == "permit"  # cached
    reload_policies()
    got = get_pdp("prod").decide("devops", "promote_model", passed)
    assert (got.decision, got.policies) == ("needs_approval", ["prod.promote"])


def test_unknown_environment_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="environment"):
        PDP("qa")


def test_entry_points_stop_at_start_on_a_broken_policy_file(policy_copy: Path) -> None:
    """load_all_tools() is what chat, crew, the loop and the API call first: it must refuse to start."""
    from autooptimizer.tools import load_all_tools

    _append(policy_copy / "cedar" / "staging.cedar", "permit (principal, action, resource) when { ")
    with pytest.raises(ConfigError) as err:
        load_all_tools()
    assert "staging.cedar" in err.value.problem


# --- intent scope: a run may change only what the operator's goal asked for -----------------------------------------
@pytest.mark.parametrize("env", ENVS)
@pytest.mark.parametrize("tool", GUARDED_TOOLS)
def test_out_of_scope_denies_every_change_and_critical_tool_even_approved(env: str, tool: str) -> None:
    pdp = get_pdp(env)
    got = pdp.decide(owner(tool), tool, {**PERMISSIVE, "in_scope": False})
    assert got.decision == "deny" and "shared.intent-scope" in got.policies, got
    assert "operator" in got.reason
    assert "shared.intent-scope" not in pdp.decide(owner(tool), tool, PERMISSIVE).policies


@pytest.mark.parametrize("env", ENVS)
@pytest.mark.parametrize("tool", READ_TOOLS)
def test_out_of_scope_leaves_read_tools_alone(env: str, tool: str) -> None:
    got = get_pdp(env).decide(owner(tool), tool, {"in_scope": False})
    assert (got.decision, got.policies) == ("permit", ["shared.read-by-owner"])


def test_missing_in_scope_reads_as_out_of_scope() -> None:
    """Fail closed: a caller that forgets the key gets no change tool (the registry always sets it)."""
    got = get_pdp("dev").decide("devops", "rollback_deployment", {})
    assert got.decision == "deny" and got.policies == ["shared.intent-scope"]
    assert get_pdp("dev").decide("devops", "rollback_deployment", UNSCOPED).decision == "permit"
    assert get_pdp("dev").decide("devops", "rollback_deployment", {"in_scope": "true"}).policies == [
        "pdp.invalid-context"]


def test_the_fact_keys_are_defined_once_and_the_cedar_schema_agrees() -> None:
    """policies/facts.py is the one list of fact keys; the Cedar schema's context must name exactly the same."""
    import re

    from autooptimizer.policies.facts import CONTEXT_KEYS, TOOL_FACT_KEYS

    text = (PACKAGE_DIR / "cedar" / "schema.cedarschema").read_text()
    start = text.index("context: {") + len("context: {")
    block = re.sub(r"//[^\n]*", "", text[start:text.index("}", start)])
    declared = re.findall(r"^\s*(\w+)\??\s*:", block, re.M)
    assert sorted(declared) == sorted(CONTEXT_KEYS)
    assert set(TOOL_FACT_KEYS) == set(CONTEXT_KEYS) - {"kill_switch", "approved", "in_scope"}
