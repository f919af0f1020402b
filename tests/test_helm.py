"""The Helm chart renders for dev, staging ("oracle") and prod ("nvidia") and validates offline; the renderer
implements the Go-template subset faithfully and refuses what it does not support."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from autooptimizer.loop.gitops import HelmPatch
from autooptimizer.loop.helm import Renderer, TemplateError, parse, render_chart, validate_manifests


def _by_kind(docs: list[str]) -> dict[str, dict]:
    return {f"{d['kind']}/{d['metadata']['name'].split('-')[-1]}": d for d in map(yaml.safe_load, docs)}


@pytest.mark.parametrize("values,env,replicas", [("dev", "dev", 1), ("oracle", "staging", 2), ("nvidia", "prod", 3)])
def test_chart_renders_and_validates(values: str, env: str, replicas: int) -> None:
    docs = render_chart(values)
    report = validate_manifests(docs)
    assert report["count"] == len(docs) >= 5
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


def test_gitops_patch_on_top_sets_model_canary_and_replicas(tmp_path: Path) -> None:
    patch = tmp_path / "helm_patch.yaml"
    patch.write_text(HelmPatch(model_version="v-7", canary_version="v-8", canary_weight=0.2, replicas=4,
                               rerank_depth=20).to_yaml())
    docs = render_chart("nvidia", extra_values=[patch])
    validate_manifests(docs)
    search = _by_kind(docs)["Deployment/search"]
    args = search["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--model") + 1] == "v-7"
    assert args[args.index("--canary") + 1] == "v-8" and args[args.index("--canary-weight") + 1] == "0.2"
    assert search["spec"]["replicas"] == 4
    assert search["metadata"]["annotations"]["autooptimizer.io/canary-version"] == "v-8"


def test_invalid_values_fail_validation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("search:\n  replicas: many\n")
    with pytest.raises(Exception, match="replicas|invalid"):
        validate_manifests(render_chart("dev", extra_values=[bad]))


def _render(src: str, values: dict) -> str:
    nodes, defines = parse(src, "t")
    ctx = {"Values": values}
    return Renderer(defines, "t").render(nodes, ctx, {"$": ctx})


def test_renderer_semantics() -> None:
    assert _render("a: {{ .Values.x | default \"d\" | quote }}", {}) == 'a: "d"'
    assert _render("{{- if .Values.on }}yes{{- else }}no{{- end }}", {"on": False}) == "no"
    assert _render("x:\n  {{- range $k, $v := .Values.m }}\n  {{ $k }}: {{ $v }}\n  {{- end }}",
                   {"m": {"b": 2, "a": 1}}) == "x:\n  a: 1\n  b: 2"
    assert _render("{{ toYaml .Values.r | nindent 2 }}", {"r": {"cpu": "1"}}) == "\n  cpu: '1'"
    assert _render('{{ printf "%s-%s" "a" "b" | trunc 3 }}', {}) == "a-b"
    assert _render('{{ define "n" }}N{{ .Values.z }}{{ end }}{{ include "n" . }}', {"z": 5}) == "N5"
    assert _render("{{ if and .Values.a (not .Values.b) }}ok{{ end }}", {"a": 1, "b": 0}) == "ok"


def test_renderer_refuses_unknown_constructs() -> None:
    with pytest.raises(TemplateError, match="cannot read .sha256sum"):
        _render("{{ .Values.x | sha256sum }}", {"x": 1})
    with pytest.raises(TemplateError, match="unclosed"):
        _render("{{ if .Values.x }}", {})
