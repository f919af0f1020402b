"""The Helm chart renders with Helm's own engine for dev, staging ("oracle") and prod ("nvidia"), alone and under the
GitOps patch; values.schema.json accepts those values and rejects bad ones (naming the JSON path and the rule, as
Helm itself does); every manifest passes helm lint --strict and kubernetes-validate."""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import pytest
import yaml
from pydantic import ValidationError

from autooptimizer.deploy.helm import (
    CHART_DIR,
    PROFILES,
    LintError,
    TemplateError,
    ValuesError,
    check_values,
    lint_chart,
    load_schema,
    render_chart,
    schema_violations,
    user_values,
    validate_manifests,
)
from autooptimizer.errors import ConfigError
from autooptimizer.loop.gitops import HelmPatch

PATCHES = {
    "promote": HelmPatch(model_version="v-7", replicas=4),
    "canary": HelmPatch(model_version="v-7", canary_version="v-8", canary_weight=0.2, replicas=2, rerank_depth=20),
    "bounds": HelmPatch(model_version="m.1_x-2", canary_version="c", canary_weight=1.0, replicas=64, rerank_depth=1),
}


def _by_kind(docs: list[str]) -> dict[str, dict]:
    return {f"{d['kind']}/{d['metadata']['name'].split('-')[-1]}": d for d in map(yaml.safe_load, docs)}


def _write(tmp_path: Path, data: dict | str, name: str = "patch.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def _search_args(docs: list[str]) -> list[str]:
    return _by_kind(docs)["Deployment/search"]["spec"]["template"]["spec"]["containers"][0]["args"]


@pytest.mark.parametrize("values,env,replicas", [("dev", "dev", 1), ("oracle", "staging", 2), ("nvidia", "prod", 3)])
def test_chart_renders_lints_and_validates(values: str, env: str, replicas: int) -> None:
    docs = render_chart(values)
    report = validate_manifests(docs)
    assert report["count"] == len(docs) >= 5
    assert all(d.startswith("# Source: autooptimizer/templates/") for d in docs)
    assert [n for n in lint_chart(values) if not n.startswith("[INFO]")] == []
    m = _by_kind(docs)
    opt = m["Deployment/optimizer"]["spec"]["template"]["spec"]
    assert opt["containers"][0]["args"][-1] == env
    assert m["Deployment/search"]["spec"]["replicas"] == replicas
    assert ("PersistentVolumeClaim/state" in m) == (values != "dev")
    envs = {e["name"] for e in opt["containers"][0]["env"]}
    if values == "nvidia":
        assert opt["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert opt["tolerations"][0]["key"] == "nvidia.com/gpu"
        assert {"AUTOOPT_ARGOCD_URL", "AUTOOPT_ARGOCD_TOKEN"} <= envs
    else:
        assert "AUTOOPT_ARGOCD_URL" not in envs


def test_manifests_come_in_helms_install_order() -> None:
    kinds = [yaml.safe_load(d)["kind"] for d in render_chart("oracle")]
    assert kinds == ["ServiceAccount", "PersistentVolumeClaim", "Service", "Service", "Deployment", "Deployment"]


@pytest.mark.parametrize("patch", PATCHES)
@pytest.mark.parametrize("values", ["dev", "oracle", "nvidia"])
def test_every_values_file_under_every_gitops_patch_validates_and_renders(tmp_path: Path, values: str,
                                                                          patch: str) -> None:
    p = PATCHES[patch]
    path = _write(tmp_path, p.to_yaml(header="GitOps revision abc"))
    check_values(values, extra_values=[path])
    docs = render_chart(values, extra_values=[path])
    validate_manifests(docs)
    lint_chart(values, extra_values=[path])
    search = _by_kind(docs)["Deployment/search"]
    args = _search_args(docs)
    assert args[args.index("--model") + 1] == p.model_version
    assert search["spec"]["replicas"] == p.replicas
    assert search["metadata"]["annotations"]["autooptimizer.io/canary-version"] == (p.canary_version or "none")
    if p.canary_version:
        assert float(args[args.index("--canary-weight") + 1]) == p.canary_weight  # Go prints 1.0 as "1"
    else:
        assert "--canary" not in args
    env = {e["name"]: e.get("value") for e in search["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env.get("AUTOOPT_RERANK_DEPTH") == (str(p.rerank_depth) if p.rerank_depth else None)


def test_gitops_patch_sets_model_canary_and_replicas(tmp_path: Path) -> None:
    docs = render_chart("nvidia", extra_values=[_write(tmp_path, PATCHES["canary"].to_yaml())])
    args = _search_args(docs)
    assert args[args.index("--canary") + 1] == "v-8" and args[args.index("--canary-weight") + 1] == "0.2"
    assert _by_kind(docs)["Deployment/search"]["spec"]["replicas"] == 2


def test_schema_is_draft07_and_is_the_one_helm_loads() -> None:
    schema = load_schema()
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(schema)
    with helm_python.Chart.load(str(CHART_DIR)) as chart:
        assert chart.schema == schema
    profiles = {p.stem for p in (Path(__file__).parents[1] / "autooptimizer" / "profiles").glob("*.yaml")}
    assert set(schema["properties"]["env"]["enum"]) == profiles


def _schema_paths(node: dict, schema: dict, prefix: str = "") -> set[str]:
    if "$ref" in node:
        node = schema["definitions"][node["$ref"].split("/")[-1]]
    out = {prefix} if prefix else set()
    for key, sub in node.get("properties", {}).items():
        out |= _schema_paths(sub, schema, f"{prefix}.{key}" if prefix else key)
    return out


def test_schema_covers_every_value_the_templates_read() -> None:
    read = set()
    for tpl in (CHART_DIR / "templates").iterdir():
        read |= set(re.findall(r"\.Values\.([A-Za-z0-9_.]+)", tpl.read_text()))
    assert len(read) >= 25
    missing = read - _schema_paths(load_schema(), load_schema())
    assert missing == set()


# (patch values, JSON path that must be named, schema rule, Helm's own path)
BAD = [
    ({"search": {"replicas": 0}}, "$.search.replicas", "minimum", "/search/replicas"),
    ({"search": {"replicas": 65}}, "$.search.replicas", "maximum", "/search/replicas"),
    ({"search": {"replicas": "many"}}, "$.search.replicas", "type", "/search/replicas"),
    ({"optimizer": {"replicas": 2}}, "$.optimizer.replicas", "maximum", "/optimizer/replicas"),
    ({"search": {"canary": {"modelVersion": "v-8", "weight": 1.5}}}, "$.search.canary.weight", "maximum",
     "/search/canary/weight"),
    ({"search": {"canary": {"modelVersion": "v-8", "weight": -0.1}}}, "$.search.canary.weight", "minimum",
     "/search/canary/weight"),
    ({"search": {"canary": {"modelVersion": None, "weight": 0.3}}}, "$.search.canary.modelVersion", "type",
     "/search/canary/modelVersion"),
    ({"search": {"canary": {"weight": 0.3}}}, "$.search.canary", "required", "/search/canary"),
    ({"search": {"rerankDepth": 0}}, "$.search.rerankDepth", "minimum", "/search/rerankDepth"),
    ({"search": {"modelVersion": "bad version!"}}, "$.search.modelVersion", "pattern", "/search/modelVersion"),
    ({"search": {"port": 70000}}, "$.search.port", "maximum", "/search/port"),
    ({"search": {"datasets": ""}}, "$.search.datasets", "pattern", "/search/datasets"),
    ({"search": {"resources": {"limits": {"memory": "lots"}}}}, "$.search.resources.limits.memory", "pattern",
     "/search/resources/limits/memory"),
    ({"optimizer": {"resources": {"requests": {"cpu": -1}}}}, "$.optimizer.resources.requests.cpu", "minimum",
     "/optimizer/resources/requests/cpu"),
    ({"optimizer": {"resources": {"requests": {"cpu": True}}}}, "$.optimizer.resources.requests.cpu", "type",
     "/optimizer/resources/requests/cpu"),
    ({"optimizer": {"threads": 0}}, "$.optimizer.threads", "minimum", "/optimizer/threads"),
    ({"optimizer": {"argocd": None}}, "$.optimizer", "required", "/optimizer"),
    ({"optimizer": {"apiTokenSecret": "Token_Secret"}}, "$.optimizer.apiTokenSecret", "pattern",
     "/optimizer/apiTokenSecret"),
    ({"optimizer": {"tolerations": [{"key": "k", "effect": "Sometimes"}]}}, "$.optimizer.tolerations[0].effect",
     "enum", "/optimizer/tolerations/0/effect"),
    ({"image": {"tag": 1.0}}, "$.image.tag", "type", "/image/tag"),
    ({"image": {"repository": "Bad Repo"}}, "$.image.repository", "pattern", "/image/repository"),
    ({"image": {"pullPolicy": "Sometimes"}}, "$.image.pullPolicy", "enum", "/image/pullPolicy"),
    ({"env": "qa"}, "$.env", "enum", "/env"),
    ({"prometheus": {"url": "prometheus:9090"}}, "$.prometheus.url", "pattern", "/prometheus/url"),
    ({"persistence": {"size": "big"}}, "$.persistence.size", "pattern", "/persistence/size"),
    ({"persistence": {"accessMode": "ReadWriteSometimes"}}, "$.persistence.accessMode", "enum",
     "/persistence/accessMode"),
    ({"search": {"replica": 2}}, "$.search", "additionalProperties", "/search"),
    ({"searh": {"replicas": 2}}, "$", "additionalProperties", ""),
]


@pytest.mark.parametrize("values", ["dev", "nvidia"])
@pytest.mark.parametrize("bad,path,rule,helm_path", BAD, ids=[f"{b[1]}-{b[2]}" for b in BAD])
def test_bad_values_are_rejected_naming_path_and_rule_by_jsonschema_and_by_helm(
        tmp_path: Path, values: str, bad: dict, path: str, rule: str, helm_path: str) -> None:
    patch = _write(tmp_path, bad)
    with pytest.raises(ValuesError) as err:
        render_chart(values, extra_values=[patch])
    assert f"{path}: " in err.value.problem and f"[rule: {rule}]" in err.value.problem
    assert "values.schema.json" in err.value.fix
    user = user_values([CHART_DIR / PROFILES[values], patch])
    with helm_python.Chart.load(str(CHART_DIR)) as chart, pytest.raises(helm_python.HelmValuesError) as native:
        chart.validate_schema(user)
    assert f"at '{helm_path}'" in str(native.value)


@pytest.mark.parametrize("field,value", [("replicas", 0), ("replicas", 1), ("replicas", 64), ("replicas", 65),
                                         ("canary_weight", -0.01), ("canary_weight", 0.0), ("canary_weight", 1.0),
                                         ("canary_weight", 1.01), ("rerank_depth", 0), ("rerank_depth", 1)])
def test_schema_bounds_match_the_gitops_patch_model(field: str, value: float) -> None:
    fields: dict[str, Any] = {"model_version": "v-1", "canary_version": "v-2", field: value}
    try:
        patch_ok = HelmPatch(**fields) is not None
    except ValidationError:
        patch_ok = False
    search = {"modelVersion": "v-1", "canary": {"modelVersion": "v-2", "weight": fields.get("canary_weight", 0.0)},
              "replicas": fields.get("replicas", 1), "rerankDepth": fields.get("rerank_depth")}
    with helm_python.Chart.load(str(CHART_DIR)) as chart:
        merged = chart.merge_values({"search": search})
    assert (schema_violations(merged, load_schema()) == []) == patch_ok


def test_cli_renders_to_a_file_and_a_bad_value_exits_2_naming_path_and_rule(tmp_path: Path) -> None:
    out = tmp_path / "m.yaml"
    patch = _write(tmp_path, PATCHES["canary"].to_yaml())
    ok = subprocess.run([sys.executable, "-m", "autooptimizer", "helm", "render", "--values", "oracle", "--patch",
                         str(patch), "--out", str(out)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "helm lint --strict: ok; 6 manifests valid" in ok.stderr
    assert [d["kind"] for d in yaml.safe_load_all(out.read_text())].count("Deployment") == 2
    bad = _write(tmp_path, {"search": {"canary": {"modelVersion": "v-8", "weight": 2}}}, "bad.yaml")
    res = subprocess.run([sys.executable, "-m", "autooptimizer", "helm", "render", "--values", "dev", "--patch",
                          str(bad)], capture_output=True, text=True)
    assert res.returncode == 2
    assert "$.search.canary.weight: 2 is greater than the maximum of 1 [rule: maximum]" in res.stderr
    assert "Traceback" not in res.stderr and res.stdout == ""


@pytest.mark.parametrize("text,match", [("- search\n- env\n", "not a values file.*cannot unmarshal array"),
                                        ("search: {replicas: 2\n", "not a values file.*did not find expected")])
def test_unreadable_values_files_are_named(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ValuesError, match=match):
        render_chart("dev", extra_values=[_write(tmp_path, text)])
    with pytest.raises(ValuesError, match="'qa' not found"):
        render_chart("qa")
    with pytest.raises(ValuesError, match="not found"):
        render_chart("dev", extra_values=[tmp_path / "missing.yaml"])


def test_kubernetes_validate_rejects_a_bad_manifest() -> None:
    docs = render_chart("dev")
    search = next(d for d in docs if "search-deployment" in d.splitlines()[0])
    broken = search.replace("replicas: 1", "replicas: many", 1)
    assert broken != search
    with pytest.raises(ConfigError, match="Deployment/autoopt-autooptimizer-search is invalid"):
        validate_manifests([broken])


@pytest.fixture
def chart_copy(tmp_path: Path) -> Path:
    dst = tmp_path / "autooptimizer"
    shutil.copytree(CHART_DIR, dst)
    return dst


def test_helm_engine_renders_sprig_and_tpl(chart_copy: Path) -> None:
    (chart_copy / "templates" / "extra.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ include \"autoopt.fullname\" . }}-extra\n"
        "data:\n  sha: {{ .Values.env | sha256sum | quote }}\n  b64: {{ .Values.env | b64enc | quote }}\n"
        "  tpl: {{ tpl \"{{ .Release.Name }}-{{ .Values.search.port }}\" . | quote }}\n"
        "  list: {{ list 3 1 2 | sortAlpha | join \",\" | quote }}\n")
    docs = render_chart("oracle", chart=chart_copy)
    cm = _by_kind(docs)["ConfigMap/extra"]
    assert cm["data"] == {"sha": hashlib.sha256(b"staging").hexdigest(), "b64": base64.b64encode(b"staging").decode(),
                          "tpl": "autoopt-8700", "list": "1,2,3"}
    validate_manifests(docs)


@pytest.mark.parametrize("template,match", [
    ("a: {{ .Values.env | nosuchfn }}\n", r"extra\.yaml.*function \"nosuchfn\" not defined"),
    ("a: {{ required \"search.tier is needed\" .Values.search.tier }}\n", "search.tier is needed"),
    ("a: {{ fail \"refused\" }}\n", "refused"),
    ("{{ if .Values.env }}a: 1\n", r"extra\.yaml.*unexpected EOF"),
])
def test_template_errors_name_the_template_and_the_construct(chart_copy: Path, template: str, match: str) -> None:
    (chart_copy / "templates" / "extra.yaml").write_text(template)
    with pytest.raises(TemplateError, match=match):
        render_chart("dev", chart=chart_copy)


def test_helm_lint_strict_fails_on_a_warning(chart_copy: Path) -> None:
    (chart_copy / "templates" / "extra.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Bad_Name\ndata: {a: b}\n")
    with pytest.raises(LintError, match=r"\[WARNING\] templates/extra.yaml: object name does not conform"):
        lint_chart("dev", chart=chart_copy)


def test_a_chart_without_its_schema_is_refused(chart_copy: Path) -> None:
    (chart_copy / "values.schema.json").unlink()
    with pytest.raises(ValuesError, match="values.schema.json is missing"):
        render_chart("dev", chart=chart_copy)


def test_missing_helm_sdk_names_the_install_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "helm_python", None)
    with pytest.raises(ConfigError) as err:
        render_chart("dev")
    assert "Helm's SDK is not installed" in err.value.problem and "autooptimizer[helm]" in err.value.fix
