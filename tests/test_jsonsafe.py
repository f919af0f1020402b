"""The bounded, iterative JSON helpers: exact limits, the first problem named with its place, JSON-safe copies of
anything, and a depth scan of JSON text that needs no parsing."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel

from autooptimizer.jsonsafe import (
    INVALID,
    MAX_DEPTH,
    MAX_ITEMS,
    MAX_NODES,
    MAX_STR,
    TOO_DEEP,
    TOO_LARGE,
    check_json,
    json_text_depth,
    preview,
    safe_label,
    to_json_safe,
)


def nest(depth: int, leaf: object = 1) -> object:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def test_depth_is_counted_from_the_top_level_container() -> None:
    assert check_json(nest(MAX_DEPTH)) is None
    problem = check_json(nest(MAX_DEPTH + 1))
    assert problem is not None and problem.policy == TOO_DEEP and "args" + "[0]" * 6 in problem.detail
    assert check_json(nest(100_000)).policy == TOO_DEEP  # type: ignore[union-attr]


@pytest.mark.parametrize("value, policy, words", [
    ({"a": list(range(MAX_ITEMS + 1))}, TOO_LARGE, f"{MAX_ITEMS + 1} items in args.a"),
    ([[0] * 900 for _ in range(60)], TOO_LARGE, f"more than {MAX_NODES} values"),
    ({"a": {"b": "x" * (MAX_STR + 1)}}, TOO_LARGE, "at args.a.b"),
    ({"a": [1, {"b": float("nan")}]}, INVALID, "at args.a[1].b"),
    ({"a": [2 ** 64]}, INVALID, "64 bits"),
    ({"a": [-(2 ** 64)]}, INVALID, "64 bits"),
    ({7: 1}, INVALID, "key of type int in args"),
    ({"a\ud800": 1}, INVALID, "lone surrogate"),
    ([b"x"], INVALID, "type bytes, which is not JSON data at args[0]"),
])
def test_the_first_problem_is_named_with_its_place(value: object, policy: str, words: str) -> None:
    problem = check_json(value)
    assert problem is not None and problem.policy == policy and words in problem.detail, problem


def test_a_long_string_is_reported_only_after_every_other_problem() -> None:
    late = check_json({"a": "x" * (MAX_STR + 1), "b": 1})
    assert late is not None and late.late and late.policy == TOO_LARGE
    early = check_json({"a": "x" * (MAX_STR + 1), "b": float("inf")})
    assert early is not None and not early.late and early.policy == INVALID


def test_plain_json_at_the_limits_passes() -> None:
    value = {"s": "x" * MAX_STR, "l": list(range(MAX_ITEMS)), "i": 2 ** 64 - 1, "j": -(2 ** 64) + 1, "f": 1e308,
             "t": (1, 2), "n": None, "b": True, "u": "\U0001f600\u202e\x00"}
    assert check_json(value) is None


class Inner(BaseModel):
    x: list


def test_to_json_safe_keeps_plain_data_and_marks_the_rest() -> None:
    plain = {"a": [1, 2.5, "s", None, True], "b": {"c": "d"}}
    assert to_json_safe(plain) == plain
    out = to_json_safe({"deep": nest(5000), "big": 10 ** 5000, "nan": float("nan"), "bytes": b"abc",
                        "set": {3}, "tuple": (1,), 5: "int key", (1, 2): "tuple key", "sur": "a\ud800",
                        "model": Inner(x=[1])})
    assert out["big"] == "<int of about 5001 digits>" and out["nan"] == "nan" and out["bytes"] == "<3 bytes>"
    assert out["set"] == [3] and out["tuple"] == [1] and out["5"] == "int key" and out["<tuple key>"] == "tuple key"
    assert out["sur"] == "a\\ud800" and out["model"] == {"x": [1]}
    assert to_json_safe({"long": "y" * 20, "many": list(range(5))}, max_str=10, max_items=3) == {
        "long": "y" * 10 + "…(10 more characters)", "many": [0, 1, 2, "…(2 more items)"]}
    assert to_json_safe({str(i): i for i in range(5)}, max_items=2) == {"0": 0, "1": 1, "…": "3 more items"}
    json.dumps(out, ensure_ascii=False).encode("utf-8")  # really JSON, really UTF-8


def test_to_json_safe_cuts_depth_and_total_size() -> None:
    out = to_json_safe(nest(5000), max_depth=3)
    assert out == [[["…(nested deeper than 3 levels)"]]]
    wide = to_json_safe([[0] * 100 for _ in range(100)], max_nodes=50)
    assert "…(over 50 values)" in json.dumps(wide, ensure_ascii=False)
    cyclic: list = []
    cyclic.append(cyclic)
    assert "nested deeper than" in json.dumps(to_json_safe(cyclic))


def test_objects_that_cannot_even_print_show_their_type() -> None:
    class Hostile:
        def __str__(self) -> str:
            raise RecursionError("no")

    assert to_json_safe([Hostile()]) == ["<Hostile>"]
    assert safe_label(None) == "<NoneType>" and safe_label("q\udfff") == "q\\udfff"


def test_preview_is_one_bounded_line() -> None:
    text = preview({"deep": nest(3000), "s": "z" * 1000}, limit=120)
    assert len(text) <= 121 and "\n" not in text


@pytest.mark.parametrize("text, depth", [
    ("{}", 1), ('{"a": [1, {"b": []}]}', 4), ('"[[[["', 0), ('{"a": "\\"[[[", "b": [[]]}', 3),
    ("[" * 5000 + "]" * 5000, 5000), ('{"a": "\\\\", "b": [[1]]}', 3),
])
def test_json_text_depth_scans_without_parsing(text: str, depth: int) -> None:
    assert json_text_depth(text) == depth
