"""The policy decision point: Cedar (`cedarpy`) policies decide every tool call.

Files (in `autooptimizer/policies/cedar/`, or `$AUTOOPT_POLICY_DIR/cedar/`): `schema.cedarschema`, `shared.cedar`
(every env) and one `<env>.cedar` per environment profile. The env's policy set is shared + env. Every file is
parsed and validated against the schema at load; a broken file raises ConfigError naming the file and reason.

Decisions: Cedar answers Allow/Deny with the determining policies. Allow whose determining policies are all
annotated `@decision("needs_approval")` becomes needs_approval; any forbid wins; nothing permitted is deny.
Each policy carries `@id` (reported) and `@reason` (joined into the human-readable reason).

The context is a `PolicyContext` (`policies/facts.py`, the one definition of the fact keys): booleans default to
false and numbers to absent, so a missing key can never read as true.
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any, Literal

import cedarpy as _cedarpy
from pydantic import BaseModel, ValidationError

from autooptimizer.errors import ConfigError
from autooptimizer.policies.catalog import Catalog, load_catalog_file, policy_dir
from autooptimizer.policies.facts import PolicyContext
from autooptimizer.settings import ENVIRONMENTS

DecisionKind = Literal["permit", "deny", "needs_approval"]
cedarpy: Any = _cedarpy  # a compiled extension without type information: its values are plain Any here
_TOOL_REF = re.compile(r'Tool::"([^"]*)"')
_AGENT_REF = re.compile(r'Agent::"([^"]*)"')


class PolicyDecision(BaseModel):
    decision: DecisionKind
    policies: list[str]
    reason: str


class _PolicyMeta(BaseModel):
    id: str
    effect: str
    reason: str
    needs_approval: bool
    file: str


def _cedar_dir(base: Path) -> Path:
    return base / "cedar" if (base / "cedar").is_dir() else base


def _read(path: Path) -> str:
    if not path.is_file():
        raise ConfigError(f"Policy file {path} is missing.", "Restore it, or point AUTOOPT_POLICY_DIR at a full set.")
    return path.read_text()


def _parse_file(path: Path, text: str, schema: Any, catalog: Catalog) -> list[_PolicyMeta]:
    """Parse and validate one file on its own, so an error names the file it is in."""
    try:
        est: dict[str, Any] = json.loads(cedarpy.policies_to_json_str(text))
    except ValueError as exc:
        raise ConfigError(f"Policy file {path} does not parse: {exc}", "Fix the Cedar syntax in that file.") from exc
    if est.get("templates"):
        raise ConfigError(f"Policy file {path} contains templates.", "Use only static policies.")
    result: Any = cedarpy.validate_policies(text, schema)
    if not result.validation_passed:
        ids: dict[str, str] = result.id_annotations_by_policy_id
        errs = "; ".join(f"[{ids.get(e.policy_id, e.policy_id)}] {e.error}" for e in result.errors)
        raise ConfigError(f"Policy file {path} fails schema validation: {errs}",
                          "Fix the policy (attribute names and types are in schema.cedarschema).")
    unknown_tools = sorted(set(_TOOL_REF.findall(text)) - set(catalog.tools))
    unknown_agents = sorted(set(_AGENT_REF.findall(text)) - set(catalog.agents))
    if unknown_tools or unknown_agents:
        raise ConfigError(f"Policy file {path} names tools/agents not in catalog.yaml: "
                          f"{unknown_tools + unknown_agents}",
                          "Fix the name (a typo would silently never match) or add it to catalog.yaml.")
    metas: list[_PolicyMeta] = []
    policies: dict[str, dict[str, Any]] = est["staticPolicies"]
    for pid, pol in policies.items():
        ann: dict[str, str] = pol.get("annotations") or {}
        if not ann.get("id"):
            raise ConfigError(f"Policy file {path}: policy #{pid[6:] if pid.startswith('policy') else pid} has no "
                              "@id annotation.", 'Add @id("<file>.<name>") above it.')
        if not ann.get("reason"):
            raise ConfigError(f"Policy file {path}: policy {ann['id']} has no @reason annotation.",
                              "Add @reason(\"...\") saying in words why it decides as it does.")
        dec = ann.get("decision")
        if dec not in (None, "needs_approval") or (dec and pol["effect"] != "permit"):
            raise ConfigError(f"Policy file {path}: policy {ann['id']} has @decision({dec!r}).",
                              'Only permit policies may carry @decision("needs_approval").')
        metas.append(_PolicyMeta(id=ann["id"], effect=pol["effect"], reason=ann["reason"],
                                 needs_approval=dec == "needs_approval", file=path.name))
    return metas


class PDP:
    """One environment's pre-parsed policy set, schema and entities. `decide` is safe to call from many threads."""

    def __init__(self, env: str, base_dir: Path | None = None) -> None:
        if env not in ENVIRONMENTS:
            raise ConfigError(f"Unknown environment {env!r} for the policies.", f"Use one of {ENVIRONMENTS}.")
        base = Path(base_dir) if base_dir else policy_dir()
        self.env = env
        self.catalog = load_catalog_file(base / "catalog.yaml")
        cdir = _cedar_dir(base)
        schema_path = cdir / "schema.cedarschema"
        try:
            self.schema = cedarpy.Schema.from_str(_read(schema_path))
        except ValueError as exc:
            raise ConfigError(f"Cedar schema {schema_path} is invalid: {exc}", "Fix the schema file.") from exc
        self.files = [cdir / "shared.cedar", cdir / f"{env}.cedar"]
        texts = [_read(p) for p in self.files]
        metas: list[_PolicyMeta] = []
        for path, text in zip(self.files, texts, strict=True):
            metas += _parse_file(path, text, self.schema, self.catalog)
        seen: dict[str, str] = {}
        for m in metas:
            if m.id in seen:
                raise ConfigError(f"Policy id {m.id!r} appears in both {seen[m.id]} and {m.file}.",
                                  "Give every policy a unique @id.")
            seen[m.id] = m.file
        self.policies = {m.id: m for m in metas}
        self.policy_text = "\n".join(texts)
        self.policy_set = cedarpy.PolicySet.from_str(self.policy_text)
        entities: list[dict[str, Any]] = [{"uid": {"type": "Agent", "id": a}, "attrs": {}, "parents": []}
                                          for a in self.catalog.agents]
        entities += [{"uid": {"type": "Tool", "id": t},
                      "attrs": {"owner": {"__entity": {"type": "Agent", "id": e.owner}}, "risk": e.risk},
                      "parents": []} for t, e in self.catalog.tools.items()]
        try:
            self.entities = cedarpy.Entities.from_json_str(json.dumps(entities), self.schema)
        except ValueError as exc:
            raise ConfigError(f"The catalogue does not fit the Cedar schema: {exc}", "Fix catalog.yaml.") from exc

    def decide(self, agent: str, tool: str, context: PolicyContext | dict[str, Any] | None = None) -> PolicyDecision:
        """permit / deny / needs_approval for `agent` calling `tool` with `context` (missing keys = false/absent)."""
        try:
            ctx = context if isinstance(context, PolicyContext) else PolicyContext.model_validate(context or {})
            cedar_ctx = ctx.to_cedar()
        except ValidationError as exc:
            why = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
            return PolicyDecision(decision="deny", policies=["pdp.invalid-context"],
                                  reason=f"the policy context is invalid ({why})")
        except ValueError as exc:
            return PolicyDecision(decision="deny", policies=["pdp.invalid-context"],
                                  reason=f"the policy context is invalid ({exc})")
        request = {"principal": {"type": "Agent", "id": agent}, "action": {"type": "Action", "id": "call"},
                   "resource": {"type": "Tool", "id": tool}, "context": cedar_ctx}
        # No per-request schema: PolicyContext already fixes every key's type, and the policies and entities were
        # validated against the schema at load. Skipping it saves ~10% per decision.
        result: Any = cedarpy.is_authorized(request, self.policy_set, self.entities)
        ann: dict[str, str] = result.diagnostics.id_annotations_by_reason
        reasons: list[str] = result.diagnostics.reasons
        ids = [ann.get(pid, pid) for pid in reasons]
        prefix_ids: list[str] = []
        prefix = ""
        if agent not in self.catalog.agents:
            prefix_ids, prefix = ["pdp.unknown-agent"], f"unknown agent {agent!r}; "
        if result.decision == cedarpy.Decision.Allow and ids:
            plain = [i for i in ids if not self.policies[i].needs_approval]
            chosen = plain or ids
            return PolicyDecision(decision="permit" if plain else "needs_approval", policies=sorted(chosen),
                                  reason="; ".join(self.policies[i].reason for i in sorted(chosen)))
        if ids:  # forbids
            return PolicyDecision(decision="deny", policies=prefix_ids + sorted(ids),
                                  reason=prefix + "; ".join(self.policies[i].reason for i in sorted(ids)))
        if tool not in self.catalog.tools:
            why = f"unknown tool {tool!r} (not in the policy catalogue)"
            return PolicyDecision(decision="deny", policies=prefix_ids + ["pdp.unknown-tool"], reason=prefix + why)
        return PolicyDecision(decision="deny", policies=prefix_ids + ["pdp.default-deny"],
                              reason=prefix + f"no policy permits {agent} to call {tool} in {self.env} "
                              "with this context")


_CACHE: dict[tuple[str, str], PDP] = {}
_CACHE_LOCK = threading.Lock()


def get_pdp(env: str) -> PDP:
    """The cached PDP for `env` (policies are read once per process; see `reload_policies`)."""
    key = (env, str(policy_dir()))
    pdp = _CACHE.get(key)
    if pdp is None:
        with _CACHE_LOCK:
            pdp = _CACHE.get(key) or PDP(env)
            _CACHE[key] = pdp
    return pdp


def reload_policies() -> None:
    """Forget loaded policy sets so the next decision reads the files again."""
    from autooptimizer.policies.catalog import forget_catalog

    with _CACHE_LOCK:
        _CACHE.clear()
    forget_catalog()


def load_all(base_dir: Path | None = None) -> dict[str, PDP]:
    """Load and validate every environment's policies; call at startup so a broken file stops it."""
    return {env: PDP(env, base_dir) for env in ENVIRONMENTS}
