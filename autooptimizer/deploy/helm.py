"""Render, lint and check the Helm chart in deploy/helm/autooptimizer offline, with Helm itself.

Rendering is Helm's own Go SDK (v4, loaded in-process from helm-python-sdk's prebuilt `libhelm_c`; no `helm` binary,
Go toolchain or cluster): `render_chart` is an install dry run with client-side rendering, which is what
`helm template` runs, so the templates may use anything Helm offers (sprig, `tpl`, `required`, `fail`) and render
exactly as in a real deploy, apart from `lookup` (empty offline) and hooks (not part of the manifest; the chart has
none). `lint_chart` is `helm lint --strict`.

Values are checked before Helm sees them: Helm's coalesce of values.yaml with the user's files (later wins, a `null`
deletes a default), then `jsonschema` (draft-07) against the chart's values.schema.json, the same file Helm validates
natively on install/upgrade/template/lint; a violation names its JSON path and the rule. The manifests are checked
with kubernetes-validate (offline, strict) against the Kubernetes OpenAPI schemas.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from autooptimizer.errors import ConfigError

CHART_DIR = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "autooptimizer"
PROFILES = {"dev": "values-dev.yaml", "oracle": "values-oracle.yaml", "staging": "values-oracle.yaml",
            "nvidia": "values-nvidia.yaml", "prod": "values-nvidia.yaml"}
_INSTALL_HINT = "pip install 'autooptimizer[helm]' (helm-python-sdk bundles Helm's Go SDK; see docs/loop.md ## Helm)."


class ValuesError(ConfigError):
    """A values file is unreadable, or the merged values break the chart's values.schema.json."""


class TemplateError(ConfigError):
    """Helm could not render the chart: a template error (bad function, `required`/`fail`, malformed YAML)."""


class LintError(ConfigError):
    """`helm lint --strict` reported errors or warnings."""


def _helm() -> Any:
    """helm_python, imported late (it maps an ~85 MB library) and with a fix when it is missing."""
    try:
        import helm_python
    except ImportError as exc:
        raise ConfigError(f"Helm's SDK is not installed ({exc}).", _INSTALL_HINT) from exc
    return helm_python


# -- values ---------------------------------------------------------------------------------------------------------
def values_files(values: str | Path = "dev", extra_values: list[Path] | None = None,
                 chart: Path = CHART_DIR) -> list[Path]:
    """The `-f` files in order: a profile name (dev/oracle/nvidia, staging/prod) or a path, then the extras."""
    p = Path(values)
    if p.is_file():
        first = p
    elif str(values) in PROFILES:
        first = chart / PROFILES[str(values)]
    else:
        raise ValuesError(f"Values {str(values)!r} not found.", f"Use one of {', '.join(PROFILES)} or a values file.")
    files = [first, *(Path(f) for f in extra_values or [])]
    for f in files:
        if not f.is_file():
            raise ValuesError(f"Values file {f} not found.", "Pass an existing file to --values/--patch.")
    return files


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Helm CLI's merge of several -f files (pkg/cli/values mergeMaps): maps merge key by key, anything else wins."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def user_values(files: list[Path]) -> dict[str, Any]:
    """The user-supplied values: every file parsed by Helm's own YAML reader (so `y:` is the key `true`, as in
    Helm) and merged, later files winning."""
    helm = _helm()
    merged: dict[str, Any] = {}
    for f in files:
        try:
            data = helm.values_from_yaml(f.read_text())
        except helm.HelmError as exc:
            raise ValuesError(f"{f} is not a values file (a YAML mapping): {exc}",
                              "Fix the file: a values file is a YAML mapping, e.g. `search: {replicas: 2}`.") from exc
        merged = _merge(merged, data)
    return merged


def effective_values(user: dict[str, Any], chart: Path = CHART_DIR) -> dict[str, Any]:
    """What the templates see as .Values: Helm's own coalesce of the chart's values.yaml with `user`."""
    helm = _helm()
    try:
        with helm.Chart.load(str(chart)) as ch:
            return ch.merge_values(user)
    except helm.HelmError as exc:
        raise TemplateError(f"Helm could not load the chart at {chart}: {exc}",
                            "Fix Chart.yaml or values.yaml.") from exc


def load_schema(chart: Path = CHART_DIR) -> dict[str, Any]:
    path = chart / "values.schema.json"
    if not path.is_file():
        raise ValuesError(f"{path} is missing.", "The chart must ship values.schema.json (Helm validates with it).")
    return json.loads(path.read_text())


def schema_violations(values: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """Every violation as `<JSON path>: <message> [rule: <keyword>] (<the rule's description>)`, in path order;
    [] when the values pass."""
    import jsonschema

    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(values), key=lambda e: [str(p) for p in e.absolute_path])
    return [f"{e.json_path}: {e.message} [rule: {e.validator}]"
            + (f" ({e.schema['description']})" if _explains(e) else "") for e in errors]


def _explains(error: Any) -> bool:
    """The failing subschema's description says why the rule exists (not for an unexpected key: that is a typo)."""
    schema = error.schema
    return isinstance(schema, dict) and "description" in schema and error.validator != "additionalProperties"


def check_values(values: str | Path = "dev", *, extra_values: list[Path] | None = None,
                 chart: Path = CHART_DIR) -> dict[str, Any]:
    """The user values (merged -f files) once the coalesced values pass values.schema.json; raises ValuesError."""
    files = values_files(values, extra_values, chart)
    user = user_values(files)
    bad = schema_violations(effective_values(user, chart), load_schema(chart))
    if bad:
        raise ValuesError(
            f"values.schema.json rejects the values from {', '.join(map(str, files))}:\n  " + "\n  ".join(bad),
            f"Fix those values; the rules are in {chart / 'values.schema.json'}.")
    return user


# -- rendering, lint, manifests -------------------------------------------------------------------------------------
def render_chart(values: str | Path = "dev", *, chart: Path = CHART_DIR, release: str = "autoopt",
                 namespace: str = "autooptimizer", extra_values: list[Path] | None = None) -> list[str]:
    """The chart's manifests as `helm template <release> <chart> -n <namespace> -f <values> -f <extra>...` prints
    them: one YAML document per item, each headed `# Source: <chart>/templates/<file>`, in Helm's install order."""
    user = check_values(values, extra_values=extra_values, chart=chart)
    helm = _helm()
    try:
        with helm.Config(namespace=namespace) as cfg:
            rel = cfg.install(str(chart), release, user, namespace=namespace, dry_run="client")
    except helm.HelmError as exc:
        raise TemplateError(f"Helm could not render {chart.name}: {exc}",
                            "Fix the template or value Helm names (`helm template` gives the same error).") from exc
    docs = [d.strip() + "\n" for d in re.split(r"(?m)^---\s*$", rel.get("manifest") or "") if d.strip()]
    return [d for d in docs if _parse(d)]


def _parse(doc: str) -> Any:
    try:
        return yaml.safe_load(doc)
    except yaml.YAMLError as exc:
        raise TemplateError(f"A template rendered invalid YAML: {exc}\n{doc}", "Fix the template.") from exc


def lint_chart(values: str | Path = "dev", *, chart: Path = CHART_DIR, namespace: str = "autooptimizer",
               extra_values: list[Path] | None = None) -> list[str]:
    """`helm lint --strict` with the values; returns the info-level notes, raises LintError on warnings or errors."""
    user = check_values(values, extra_values=extra_values, chart=chart)
    report = _helm().lint(str(chart), user, strict=True, namespace=namespace)
    levels = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}
    notes = [f"[{levels.get(m['severity'], m['severity'])}] {m['path']}: {m['error'].strip()}"
             for m in report.get("messages", [])]
    bad = [n for n in notes if not n.startswith("[INFO]")]
    if bad or report.get("errors"):
        raise LintError("helm lint --strict failed:\n  " + "\n  ".join(bad or report["errors"]),
                        "Fix what helm lint names in the chart or values.")
    return notes


def validate_manifests(docs: list[str], version: str | None = None) -> dict[str, Any]:
    """kubernetes-validate (offline, strict) on every manifest; raises ConfigError naming the first bad one."""
    import kubernetes_validate

    version = version or kubernetes_validate.latest_version()
    kinds = []
    for doc in docs:
        data = yaml.safe_load(doc)
        try:
            kubernetes_validate.validate(data, version, strict=True)
        except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError,
                kubernetes_validate.InvalidSchemaError) as exc:
            raise ConfigError(f"{data.get('kind')}/{(data.get('metadata') or {}).get('name')} is invalid: "
                              f"{str(exc).splitlines()[0]}", "Fix the chart template or values.") from exc
        kinds.append(f"{data['kind']}/{data['metadata']['name']}")
    return {"count": len(docs), "version": version, "manifests": kinds}
