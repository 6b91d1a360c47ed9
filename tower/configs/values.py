"""Typed template variables: checking one value, and resolving a job's prompt_vars."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tower.errors import Invalid

if TYPE_CHECKING:
    from tower.configs.models import VarSpec

VarValue = bool | int | float | str

_ARTICLE = {"string": "a string", "integer": "an integer", "float": "a number"}


def check_value(type_name: str, value: object) -> VarValue:
    """Return `value` as `type_name`, or raise ValueError. bool is not a number here,
    even though Python says it is; an int is a fine float."""
    if type_name == "boolean" and isinstance(value, bool):
        return value
    if isinstance(value, bool):
        raise ValueError(f"must be {_ARTICLE.get(type_name, type_name)}, got a boolean")
    if type_name == "string" and isinstance(value, str):
        return value
    if type_name == "integer" and isinstance(value, int):
        return value
    if type_name == "float" and isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return float(value)
    expected = _ARTICLE.get(type_name, "a boolean")
    raise ValueError(f"must be {expected}, got {type(value).__name__}")


def resolve_vars(
    profile_name: str, specs: Mapping[str, VarSpec], given: Mapping[str, Any]
) -> dict[str, VarValue | None]:
    """The profile's variables with the job's values checked and defaults applied.

    An optional variable without a default resolves to None, so templates can test it
    with `{% if name %}`. An explicit null counts as absent.
    """
    unknown = sorted(set(given) - set(specs))
    if unknown:
        declared = ", ".join(specs) or "none"
        raise Invalid(
            f"unknown variable {unknown[0]!r} for profile {profile_name!r} (declared: {declared})",
            field=f"prompt_vars.{unknown[0]}",
        )
    return {name: _resolve_one(name, spec, given.get(name)) for name, spec in specs.items()}


def _resolve_one(name: str, spec: VarSpec, value: Any) -> VarValue | None:
    field = f"prompt_vars.{name}"
    if value is None:
        if spec.required:
            raise Invalid(f"{field} is required", field=field)
        return spec.default
    try:
        checked = check_value(spec.type, value)
    except ValueError as error:
        raise Invalid(f"{field} {error}", field=field) from None
    if spec.enum is not None and checked not in spec.enum:
        raise Invalid(f"{field} must be one of {spec.enum}, got {value!r}", field=field)
    return checked
