"""Render the Helm chart offline, like `helm template`, and validate the manifests with kubernetes-validate.

No helm binary is obtainable here, so this is a small interpreter for the subset of Go templates the chart uses:
`{{ }}` / `{{- -}}` trimming, `.Values/.Release/.Chart` paths, `$` and `$var := ...`, pipelines, parentheses,
`if/else if/else`, `with`, `range` (lists and maps), `define`/`include`/`template`, and the functions quote, squote,
default, toYaml, indent, nindent, printf, trunc, trimSuffix, lower, upper, required, eq, ne, not, and, or, int,
toString, empty. Anything else is an error naming the template and the construct, never a silent blank: a chart
that renders here renders the same under helm.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from autooptimizer.errors import ConfigError

CHART_DIR = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "autooptimizer"
PROFILES = {"dev": "values-dev.yaml", "oracle": "values-oracle.yaml", "staging": "values-oracle.yaml",
            "nvidia": "values-nvidia.yaml", "prod": "values-nvidia.yaml"}
_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)


class TemplateError(ConfigError):
    """The chart uses a construct this renderer does not support, or a template is malformed."""


# -- parsing -----------------------------------------------------------------------------------------------------
class Node:
    pass


class Text(Node):
    def __init__(self, text: str) -> None:
        self.text = text


class Action(Node):
    def __init__(self, expr: str) -> None:
        self.expr = expr


class Block(Node):
    def __init__(self, kind: str, expr: str) -> None:
        self.kind, self.expr = kind, expr
        self.body: list[Node] = []
        self.branches: list[tuple[str | None, list[Node]]] = []  # (else-if expr | None for else, body)


def _tokens(src: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    for m in _ACTION.finditer(src):
        text = src[pos:m.start()]
        if m.group(1):
            text = text.rstrip(" \t\r\n")
        if out and out[-1][0] == "trim_next":
            out.pop()
            text = text.lstrip(" \t\r\n")
        out.append(("text", text))
        expr = m.group(2)
        if not expr.startswith("/*"):
            out.append(("action", expr))
        if m.group(3):
            out.append(("trim_next", ""))
        pos = m.end()
    tail = src[pos:]
    if out and out[-1][0] == "trim_next":
        out.pop()
        tail = tail.lstrip(" \t\r\n")
    out.append(("text", tail))
    return out


def parse(src: str, name: str) -> tuple[list[Node], dict[str, list[Node]]]:
    root: list[Node] = []
    defines: dict[str, list[Node]] = {}
    stack: list[tuple[Block, list[Node]]] = []
    cur = root
    for kind, value in _tokens(src):
        if kind == "text":
            if value:
                cur.append(Text(value))
            continue
        word = value.split(None, 1)[0] if value else ""
        rest = value[len(word):].strip()
        if word in ("if", "with", "range", "define"):
            blk = Block(word, rest)
            cur.append(blk)
            stack.append((blk, cur))
            cur = blk.body
        elif word == "else":
            if not stack:
                raise TemplateError(f"{name}: `else` outside a block.", "Fix the template.")
            blk = stack[-1][0]
            cond = rest[2:].strip() if rest.startswith("if") else None
            blk.branches.append((cond, []))
            cur = blk.branches[-1][1]
        elif word == "end":
            if not stack:
                raise TemplateError(f"{name}: `end` without a block.", "Fix the template.")
            blk, cur = stack.pop()
            if blk.kind == "define":
                cur.remove(blk)
                defines[_unquote(blk.expr)] = blk.body
        else:
            cur.append(Action(value))
    if stack:
        raise TemplateError(f"{name}: unclosed `{stack[-1][0].kind}` block.", "Add the missing {{ end }}.")
    return root, defines


def _unquote(s: str) -> str:
    s = s.strip()
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "\"'`":
        return s[1:-1]
    raise TemplateError(f"expected a quoted string, got {s!r}", "Quote template names.")


# -- evaluation ---------------------------------------------------------------------------------------------------
_TOKEN = re.compile(r'\s*(\(|\)|\||"(?:[^"\\]|\\.)*"|`[^`]*`|[^\s()|]+)')


def _lex(expr: str) -> list[str]:
    toks, pos = [], 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m:
            break
        toks.append(m.group(1))
        pos = m.end()
    return toks


def _to_yaml(v: Any) -> str:
    if v is None:
        return "null"
    return yaml.safe_dump(v, sort_keys=True, default_flow_style=False).rstrip("\n")


def _truthy(v: Any) -> bool:
    return bool(v) if not isinstance(v, int | float) or isinstance(v, bool) else v != 0


class Renderer:
    def __init__(self, defines: dict[str, list[Node]], name: str) -> None:
        self.defines = defines
        self.name = name
        self.funcs: dict[str, Callable[..., Any]] = {
            "quote": lambda *a: " ".join('"' + _go_str(x).replace("\\", "\\\\").replace('"', '\\"') + '"' for x in a),
            "squote": lambda *a: " ".join(f"'{_go_str(x)}'" for x in a),
            "default": lambda d, v=None: v if _truthy(v) else d,
            "toYaml": _to_yaml,
            "indent": lambda n, s: "\n".join(" " * int(n) + line for line in str(s).split("\n")),
            "nindent": lambda n, s: "\n" + "\n".join(" " * int(n) + line for line in str(s).split("\n")),
            "printf": lambda fmt, *a: _printf(fmt, a),
            "trunc": lambda n, s: str(s)[: int(n)],
            "trimSuffix": lambda suf, s: str(s)[: -len(suf)] if suf and str(s).endswith(suf) else str(s),
            "lower": lambda s: str(s).lower(),
            "upper": lambda s: str(s).upper(),
            "required": self._required,
            "eq": lambda a, *b: any(a == x for x in b),
            "ne": lambda a, b: a != b,
            "not": lambda a: not _truthy(a),
            "and": lambda *a: next((x for x in a if not _truthy(x)), a[-1]),
            "or": lambda *a: next((x for x in a if _truthy(x)), a[-1]),
            "int": lambda a: int(float(a)) if a not in (None, "") else 0,
            "toString": _go_str,
            "empty": lambda a: not _truthy(a),
            "include": self._include,
        }

    def _required(self, msg: str, v: Any) -> Any:
        if v is None or v == "":
            raise TemplateError(f"{self.name}: required value missing: {msg}", "Set it in the values file.")
        return v

    def _include(self, name: str, ctx: Any) -> str:
        if name not in self.defines:
            raise TemplateError(f"{self.name}: include of undefined template {name!r}.", "Define it in _helpers.tpl.")
        return self.render(self.defines[name], ctx, {"$": ctx})

    def render(self, nodes: list[Node], dot: Any, vars_: dict[str, Any]) -> str:
        out: list[str] = []
        for n in nodes:
            if isinstance(n, Text):
                out.append(n.text)
            elif isinstance(n, Action):
                out.append(self._action(n.expr, dot, vars_))
            elif isinstance(n, Block):
                out.append(self._block(n, dot, vars_))
        return "".join(out)

    def _action(self, expr: str, dot: Any, vars_: dict[str, Any]) -> str:
        m = re.match(r"^(\$\w+)\s*:?=\s*(.*)$", expr, re.S)
        if m:
            vars_[m.group(1)] = self.eval(m.group(2), dot, vars_)
            return ""
        if expr.startswith("template "):
            toks = _lex(expr[len("template "):])
            ctx = self._pipeline(toks[1:], dot, vars_) if len(toks) > 1 else dot
            return self._include(_unquote(toks[0]), ctx)
        v = self.eval(expr, dot, vars_)
        return _go_str(v)

    def _block(self, b: Block, dot: Any, vars_: dict[str, Any]) -> str:
        if b.kind == "if":
            if _truthy(self.eval(b.expr, dot, vars_)):
                return self.render(b.body, dot, vars_)
            for cond, body in b.branches:
                if cond is None or _truthy(self.eval(cond, dot, vars_)):
                    return self.render(body, dot, vars_)
            return ""
        if b.kind == "with":
            v = self.eval(b.expr, dot, vars_)
            if _truthy(v):
                return self.render(b.body, v, vars_)
            return "".join(self.render(body, dot, vars_) for cond, body in b.branches[:1] if cond is None)
        if b.kind == "range":
            m = re.match(r"^(?:(\$\w+)\s*(?:,\s*(\$\w+))?\s*:=\s*)?(.*)$", b.expr, re.S)
            assert m
            k_var, v_var, src = m.group(1), m.group(2), m.group(3)
            coll = self.eval(src, dot, vars_)
            items = list(coll.items()) if isinstance(coll, dict) else list(enumerate(coll or []))
            if isinstance(coll, dict):
                items.sort()
            if not items:
                return "".join(self.render(body, dot, vars_) for cond, body in b.branches[:1] if cond is None)
            out = []
            for k, v in items:
                scope = dict(vars_)
                if v_var:
                    scope[k_var], scope[v_var] = k, v
                elif k_var:
                    scope[k_var] = v
                out.append(self.render(b.body, v, scope))
            return "".join(out)
        raise TemplateError(f"{self.name}: unsupported block {b.kind!r}.", "Use if/with/range/define.")

    def eval(self, expr: str, dot: Any, vars_: dict[str, Any]) -> Any:
        return self._pipeline(_lex(expr), dot, vars_)

    def _pipeline(self, toks: list[str], dot: Any, vars_: dict[str, Any]) -> Any:
        cmds: list[list[str]] = [[]]
        depth = 0
        for t in toks:
            if t == "|" and depth == 0:
                cmds.append([])
                continue
            depth += (t == "(") - (t == ")")
            cmds[-1].append(t)
        value: Any = _NO
        for cmd in cmds:
            value = self._command(cmd, dot, vars_, value)
        return None if value is _NO else value

    def _command(self, toks: list[str], dot: Any, vars_: dict[str, Any], piped: Any) -> Any:
        if not toks:
            raise TemplateError(f"{self.name}: empty command in a pipeline.", "Fix the template.")
        args = self._operands(toks, dot, vars_)
        head = toks[0]
        if head in self.funcs:
            fargs = args[1:] + ([] if piped is _NO else [piped])
            try:
                return self.funcs[head](*fargs)
            except TypeError as exc:
                raise TemplateError(f"{self.name}: bad arguments to {head}: {exc}", "Fix the template.") from exc
        if len(args) != 1 or piped is not _NO:
            raise TemplateError(f"{self.name}: unknown function {head!r}.",
                                "Use a supported function (see autooptimizer/loop/helm.py).")
        return args[0]

    def _operands(self, toks: list[str], dot: Any, vars_: dict[str, Any]) -> list[Any]:
        out: list[Any] = []
        i = 0
        while i < len(toks):
            t = toks[i]
            if t == "(":
                depth, j = 1, i + 1
                while depth:
                    depth += (toks[j] == "(") - (toks[j] == ")")
                    j += 1
                out.append(self._pipeline(toks[i + 1:j - 1], dot, vars_))
                i = j
                continue
            out.append(t if (i == 0 and t in self.funcs) else self._operand(t, dot, vars_))
            i += 1
        return out

    def _operand(self, t: str, dot: Any, vars_: dict[str, Any]) -> Any:
        if t.startswith('"'):
            return bytes(t[1:-1], "utf-8").decode("unicode_escape")
        if t.startswith("`"):
            return t[1:-1]
        if t in ("true", "false"):
            return t == "true"
        if t == "nil":
            return None
        if re.fullmatch(r"-?\d+", t):
            return int(t)
        if re.fullmatch(r"-?\d+\.\d*", t):
            return float(t)
        if t == ".":
            return dot
        if t.startswith("$"):
            name, _, path = t.partition(".")
            if name not in vars_:
                raise TemplateError(f"{self.name}: undefined variable {name}.", "Define it with :=.")
            return _walk(vars_[name], path)
        if t.startswith("."):
            return _walk(dot, t[1:])
        raise TemplateError(f"{self.name}: cannot read {t!r}.", "Use .Values paths, variables or literals.")


_NO = object()


def _walk(obj: Any, path: str) -> Any:
    for part in filter(None, path.split(".")):
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


def _go_str(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _printf(fmt: str, args: tuple[Any, ...]) -> str:
    conv = re.sub(r"%v", "%s", fmt)
    return conv % tuple(_go_str(a) if isinstance(a, str | bool | type(None)) else a for a in args)


# -- chart ----------------------------------------------------------------------------------------------------------
def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _values_file(name: str | Path, chart: Path) -> Path:
    p = Path(name)
    if p.is_file():
        return p
    if str(name) in PROFILES:
        return chart / PROFILES[str(name)]
    raise ConfigError(f"Values {name!r} not found.", f"Use one of {', '.join(PROFILES)} or a values file path.")


def render_chart(values: str | Path = "dev", *, chart: Path = CHART_DIR, release: str = "autoopt",
                 namespace: str = "autooptimizer", extra_values: list[Path] | None = None) -> list[str]:
    """The chart's manifests (one YAML document per item), as `helm template -f <values>` would print them."""
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    vals = yaml.safe_load((chart / "values.yaml").read_text()) or {}
    for f in [_values_file(values, chart), *(extra_values or [])]:
        vals = _merge(vals, yaml.safe_load(Path(f).read_text()) or {})
    ctx = {
        "Values": vals,
        "Release": {"Name": release, "Namespace": namespace, "Service": "Helm", "IsInstall": True},
        "Chart": {"Name": meta["name"], "Version": meta["version"], "AppVersion": meta.get("appVersion", "")},
        "Capabilities": {"KubeVersion": {"Version": "v1.30.0"}},
    }
    tdir = chart / "templates"
    defines: dict[str, list[Node]] = {}
    parsed: list[tuple[str, list[Node]]] = []
    for path in sorted(tdir.iterdir()):
        if path.suffix not in (".yaml", ".yml", ".tpl"):
            continue
        nodes, defs = parse(path.read_text(), path.name)
        defines.update(defs)
        if not path.name.startswith("_"):
            parsed.append((path.name, nodes))
    docs: list[str] = []
    for name, nodes in parsed:
        text = Renderer(defines, name).render(nodes, ctx, {"$": ctx})
        for doc in re.split(r"(?m)^---\s*$", text):
            if doc.strip():
                try:
                    data = yaml.safe_load(doc)
                except yaml.YAMLError as exc:
                    raise TemplateError(f"{name} rendered invalid YAML: {exc}\n{doc}", "Fix the template.") from exc
                if data:
                    docs.append(f"# Source: {meta['name']}/templates/{name}\n{doc.strip()}\n")
    return docs


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
