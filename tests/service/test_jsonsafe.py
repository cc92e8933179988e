"""The JSON-safety rules request bodies pass before anything is stored."""

from __future__ import annotations

import pytest

from service.core.json_safety import MAX_JSON_DEPTH, json_safety_problem, printable


def nested(depth: int) -> object:
    value: list[object] = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize(
    "value",
    [
        {"a": 1, "b": [1.5, "é", None, True], "c": {"d": "\U0001f600"}},
        nested(MAX_JSON_DEPTH),
        {},
        "text",
    ],
)
def test_safe_values_pass(value: object) -> None:
    assert json_safety_problem(value) is None


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({"x": float("nan")}, "NaN and Infinity"),
        ({"x": [1, float("inf")]}, "NaN and Infinity"),
        ({"x": -float("inf")}, "NaN and Infinity"),
        ({"x": "\ud800"}, "lone surrogate"),
        ({"\udcff": 1}, "lone surrogate"),
        ({"x": {"y": ["ok", "a\udfffb"]}}, "lone surrogate"),
        (nested(MAX_JSON_DEPTH + 1), "nested deeper"),
        # What json.loads still parses but the next dumps or loads cannot take.
        (nested(956), "nested deeper"),
    ],
)
def test_unsafe_values_are_named(value: object, problem: str) -> None:
    found = json_safety_problem(value)
    assert found is not None and problem in found


def test_printable_shows_raw_bytes_and_keeps_text() -> None:
    assert printable("plain é") == "plain é"
    assert printable(b"a\xffb".decode("utf-8", "surrogateescape")) == "a\\xffb"
    assert printable("\ud800") == "\\ud800"
    printable(b"\xff\xfe".decode("utf-8", "surrogateescape")).encode("utf-8")
