from __future__ import annotations

from typing import Any

import pytest

from tower.configs.parse import parse_profile
from tower.configs.values import check_value, resolve_vars
from tower.errors import Invalid

PROFILE = parse_profile(
    "typed",
    """
[vars.topic]
type = "string"
required = true

[vars.count]
type = "integer"
default = 3

[vars.ratio]
type = "float"
default = 0.5

[vars.strict]
type = "boolean"
default = false

[vars.level]
type = "string"
enum = ["low", "high"]
default = "low"

[vars.note]
type = "string"
""",
)


def resolve(**given: Any) -> dict[str, Any]:
    return resolve_vars(PROFILE.name, PROFILE.vars, given)


def rejected(**given: Any) -> Invalid:
    with pytest.raises(Invalid) as caught:
        resolve(**given)
    return caught.value


def test_defaults_apply_and_optional_without_default_is_none() -> None:
    assert resolve(topic="x") == {
        "topic": "x",
        "count": 3,
        "ratio": 0.5,
        "strict": False,
        "level": "low",
        "note": None,
    }


def test_given_values_override_defaults() -> None:
    values = resolve(topic="x", count=7, ratio=2.5, strict=True, level="high", note="n")
    assert values["count"] == 7
    assert values["ratio"] == 2.5
    assert values["strict"] is True
    assert values["level"] == "high"


def test_integer_is_accepted_as_float() -> None:
    values = resolve(topic="x", ratio=2)
    assert values["ratio"] == 2.0
    assert isinstance(values["ratio"], float)


def test_missing_required_variable_names_it() -> None:
    error = rejected(count=1)
    assert error.field == "prompt_vars.topic"
    assert "required" in error.message


def test_explicit_null_counts_as_absent() -> None:
    assert rejected(topic=None).field == "prompt_vars.topic"
    assert resolve(topic="x", count=None)["count"] == 3


def test_unknown_variable_names_it_and_lists_the_declared_ones() -> None:
    error = rejected(topic="x", colour="red")
    assert error.field == "prompt_vars.colour"
    assert "topic" in error.message


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("topic", 3),
        ("count", "3"),
        ("count", 3.0),
        ("count", True),
        ("ratio", "0.5"),
        ("ratio", False),
        ("ratio", float("nan")),
        ("strict", 1),
        ("strict", "true"),
        ("note", ["a"]),
    ],
)
def test_wrong_types_are_rejected(name: str, value: Any) -> None:
    given = {"topic": "x", name: value}
    error = rejected(**given)
    assert error.field == f"prompt_vars.{name}"


def test_value_outside_enum_is_rejected() -> None:
    error = rejected(topic="x", level="medium")
    assert error.field == "prompt_vars.level"
    assert "low" in error.message


def test_check_value_reports_what_it_expected() -> None:
    with pytest.raises(ValueError, match="an integer, got a boolean"):
        check_value("integer", False)
    with pytest.raises(ValueError, match="a boolean, got int"):
        check_value("boolean", 0)
