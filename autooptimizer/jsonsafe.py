"""Bounded, non-recursive handling of untrusted JSON-like data (tool arguments, tool results, trace payloads).

Python's own `json.dumps`, `repr`, pydantic and most libraries recurse once per nesting level, so a value nested
about 1,000 levels deep (a few kB) raises `RecursionError` wherever it is first touched. Everything here walks
with an explicit stack instead, and stops at fixed limits, so it costs O(MAX_NODES) at worst and never raises:

- `check_json(value)` is the gate's strict check, run on raw tool arguments BEFORE anything recurses over them.
  It returns the first problem (`JsonProblem`) or None. Limits (per call):
  `MAX_DEPTH` nesting levels of objects/arrays (the arguments object itself is level 1), `MAX_ITEMS` items per
  object or array, `MAX_STR` characters per string or key, `MAX_NODES` values in all, integers of at most
  `MAX_INT_BITS` bits. Allowed types are JSON's: dict with str keys, list/tuple, str, int, finite float, bool,
  None. Strings must be encodable as UTF-8 (no lone surrogates). The 64 KiB size limit still applies afterwards.
- `to_json_safe(value)` is the lenient, total counterpart for anything that is only shown or stored (audit
  summaries, traces, tool outcomes): it returns a JSON-safe copy in which whatever `check_json` would refuse is
  replaced by a short marker (deeper levels, extra items, the tail of long strings, huge ints, NaN, bytes, ...).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

MAX_DEPTH = 32  # object/array nesting levels in tool arguments (real tools use 1-3)
MAX_ITEMS = 1000  # items per object or array
MAX_STR = 16_384  # characters per string or object key
MAX_NODES = 50_000  # values in all: above what fits in the 64 KiB argument limit, so that limit stays the real bound
MAX_INT_BITS = 64  # |int| < 2**64; Python refuses to print ints over 4,300 digits at all

TOO_DEEP, TOO_LARGE, INVALID = "registry.args-too-deep", "registry.args-too-large", "registry.invalid-args"
_MARK = "…"


@dataclass(frozen=True)
class JsonProblem:
    """Why a value is not acceptable JSON data: `policy` (a registry policy id), a short `reason`, and `detail`
    naming the place (e.g. `args.items[3]`) and the limit."""

    policy: str
    reason: str
    detail: str
    late: bool = False  # only a string is too long: plain JSON otherwise, safe to serialise and measure


LIMITS_TEXT = (f"plain JSON data (objects with string keys, arrays, UTF-8 strings, finite numbers, booleans, null) "
               f"within {MAX_DEPTH} levels, {MAX_ITEMS} items per object or array and {MAX_STR} characters per string")


def _path_text(link: tuple | None, root: str) -> str:
    """Render a linked path (key, parent_link) as `root.a[0].b`, eliding the middle of very long paths."""
    parts: list[str] = []
    while link is not None:
        key, link = link
        parts.append(f"[{key}]" if isinstance(key, int) else f".{safe_text(key, 40)}")
    parts.reverse()
    if len(parts) > 12:
        parts = parts[:6] + [f"…({len(parts) - 12} levels)…"] + parts[-6:]
    return root + "".join(parts)


def safe_text(text: str, limit: int = MAX_STR) -> str:
    """`text` cut to `limit` characters, with characters UTF-8 cannot hold (lone surrogates) escaped as \\udXXX."""
    if len(text) > limit:
        text = text[:limit] + f"{_MARK}({len(text) - limit} more characters)"
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def safe_label(value: Any, limit: int = 200) -> str:
    """A short printable label for an identifier (tool or agent name) that may not even be a string."""
    return safe_text(value, limit) if isinstance(value, str) else f"<{type(value).__name__}>"


def _scalar_problem(value: Any) -> tuple[str, str] | None:
    """(policy, what is wrong) for a scalar that is not acceptable JSON, else None."""
    if isinstance(value, str):
        if len(value) > MAX_STR:
            return TOO_LARGE, f"a string of {len(value)} characters (the limit is {MAX_STR})"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return INVALID, "a string with characters UTF-8 cannot encode (a lone surrogate)"
        return None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        if value.bit_length() > MAX_INT_BITS:
            return INVALID, f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits (the limit is " \
                            f"{MAX_INT_BITS} bits)"
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else (INVALID, f"the number {value}, which JSON cannot hold")
    return INVALID, f"a value of type {type(value).__name__}, which is not JSON data"


def check_json(value: Any, root: str = "args") -> JsonProblem | None:
    """The first reason `value` is not bounded JSON data, or None. Iterative; never raises.

    A string over `MAX_STR` characters is reported only once the whole value is known to be free of every other
    problem (`late=True`), so a caller may still serialise the value to measure it.
    """
    stack: list[tuple[Any, int, tuple | None]] = [(value, 1, None)]
    nodes = 0
    late: JsonProblem | None = None
    while stack:
        v, depth, path = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            return JsonProblem(TOO_LARGE, f"arguments hold more than {MAX_NODES} values",
                               f"hold more than {MAX_NODES} values in all")
        if isinstance(v, Mapping | list | tuple):
            if depth > MAX_DEPTH:
                return JsonProblem(TOO_DEEP, f"arguments are nested deeper than {MAX_DEPTH} levels",
                                   f"are nested deeper than {MAX_DEPTH} levels (at {_path_text(path, root)})")
            if len(v) > MAX_ITEMS:
                return JsonProblem(TOO_LARGE, f"an object or array holds more than {MAX_ITEMS} items",
                                   f"hold {len(v)} items in {_path_text(path, root)} (the limit is {MAX_ITEMS})")
            if isinstance(v, Mapping):
                for key, child in v.items():
                    if not isinstance(key, str):
                        return JsonProblem(INVALID, "an object key is not a string",
                                           f"hold a key of type {type(key).__name__} in {_path_text(path, root)}; "
                                           "JSON object keys are strings")
                    if (bad := _scalar_problem(key)) is not None:
                        problem = JsonProblem(bad[0], "an object key is not acceptable",
                                              f"hold a key in {_path_text(path, root)} that is {bad[1]}",
                                              late=bad[0] == TOO_LARGE)
                        if not problem.late:
                            return problem
                        late = late or problem
                    stack.append((child, depth + 1, (key, path)))
            else:
                stack.extend((child, depth + 1, (i, path)) for i, child in enumerate(v))
            continue
        if (bad := _scalar_problem(v)) is not None:
            problem = JsonProblem(bad[0], "arguments hold a value that is not acceptable JSON data",
                                  f"hold {bad[1]} at {_path_text(path, root)}", late=bad[0] == TOO_LARGE)
            if not problem.late:
                return problem
            late = late or problem
    return late


def _int_text(value: int) -> int | str:
    if value.bit_length() <= MAX_INT_BITS:
        return value
    return f"<int of about {int(value.bit_length() * 0.30103) + 1} digits>"


def _scalar(value: Any, max_str: int, text: Callable[[str], str] | None) -> Any:
    """The JSON-safe form of a non-container value."""
    if isinstance(value, str):
        out = safe_text(value, max_str)
        return text(out) if text else out
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return _int_text(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    try:
        shown = str(value)
    except Exception:  # noqa: BLE001 - any object may fail to print; show its type instead
        shown = f"<{type(value).__name__}>"
    return safe_text(shown, min(max_str, 200))


def _key(key: Any, max_str: int) -> str:
    if isinstance(key, str):
        return safe_text(key, max_str)
    if key is None or isinstance(key, bool | float):
        return json.dumps(key) if not isinstance(key, float) or math.isfinite(key) else str(key)
    if isinstance(key, int):
        return str(_int_text(key))
    return f"<{type(key).__name__} key>"


def _expand(value: Any) -> Any:
    """Pydantic models become their (python-mode) dump; a model that cannot be dumped shows its type."""
    try:
        return value.model_dump()
    except Exception:  # noqa: BLE001 - RecursionError, serializer errors: show the type, never raise
        return f"<{type(value).__name__}>"


def to_json_safe(value: Any, *, max_depth: int = MAX_DEPTH, max_items: int = MAX_ITEMS, max_str: int = MAX_STR,
                 max_nodes: int = MAX_NODES, text: Callable[[str], str] | None = None,
                 mask: Callable[[str, Any], bool] | None = None, masked: Any = None) -> Any:
    """A JSON-safe copy of anything, built iteratively within the limits; never raises.

    Containers deeper than `max_depth` become a marker string, containers keep their first `max_items` items
    (plus a marker), strings are cut to `max_str` characters and have lone surrogates escaped, ints over
    `MAX_INT_BITS` bits, NaN/Infinity, bytes and other objects become short strings, keys become strings.
    Hooks (used by trace redaction): `text(s)` rewrites every string value; when `mask(key, child)` is true the
    child is replaced by `masked`.
    """
    from pydantic import BaseModel

    holder: list[Any] = [None]
    stack: list[tuple[Any, Any, Any, int]] = [(value, holder, 0, 1)]
    nodes = 0
    while stack:
        v, parent, slot, depth = stack.pop()
        nodes += 1
        if nodes > max_nodes:
            parent[slot] = f"{_MARK}(over {max_nodes} values)"
            continue
        if isinstance(v, BaseModel):
            v = _expand(v)
        if isinstance(v, Mapping):
            if depth > max_depth:
                parent[slot] = f"{_MARK}(nested deeper than {max_depth} levels)"
                continue
            out: dict[str, Any] = {}
            parent[slot] = out
            try:
                items = list(itertools.islice(v.items(), max_items))
                extra = len(v) - len(items)
            except Exception:  # noqa: BLE001 - a broken mapping shows as its type
                parent[slot] = f"<{type(v).__name__}>"
                continue
            for k, child in items:
                key = _key(k, max_str)
                if mask is not None and mask(key, child):
                    out[key] = masked
                    continue
                out[key] = None
                stack.append((child, out, key, depth + 1))
            if extra > 0:
                out[_MARK] = f"{extra} more items"
        elif isinstance(v, list | tuple | set | frozenset):
            if depth > max_depth:
                parent[slot] = f"{_MARK}(nested deeper than {max_depth} levels)"
                continue
            seq = list(itertools.islice(v, max_items))
            lst: list[Any] = [None] * len(seq)
            parent[slot] = lst
            stack.extend((child, lst, i, depth + 1) for i, child in enumerate(seq))
            if len(v) > len(seq):
                lst.append(f"{_MARK}({len(v) - len(seq)} more items)")
        else:
            parent[slot] = _scalar(v, max_str, text)
    return holder[0]


def preview(value: Any, limit: int = 300) -> str:
    """A one-line JSON text of `value`, at most `limit` characters (for evidence and log lines)."""
    text = json.dumps(to_json_safe(value, max_depth=6, max_items=50, max_str=limit, max_nodes=2000),
                      ensure_ascii=False, sort_keys=True)
    return text if len(text) <= limit else text[:limit] + _MARK


def json_text_depth(text: str) -> int:
    """The deepest object/array nesting in JSON text, found by a linear scan (no parsing, so no recursion).

    Used before a library parses model output recursively (`json.loads` raises RecursionError at ~1,000 levels).
    """
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest
