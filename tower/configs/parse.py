"""Text to models: TOML for profiles and engines, Jinja2 for templates.

Every problem becomes tower.errors.Invalid with a message that names the config, the
key path and, for TOML syntax errors, the line.
"""

from __future__ import annotations

import re
import tomllib
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from tower.configs import legacy
from tower.configs.models import KINDS, NAME_PATTERN, Config, Engine, Profile, Template
from tower.configs.render import check_syntax
from tower.errors import Invalid

M = TypeVar("M", bound=BaseModel)


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise Invalid(f"type must be one of {', '.join(KINDS)}, got {kind!r}", field="type")
    return kind


def check_name(name: str) -> str:
    if not re.fullmatch(NAME_PATTERN, name):
        raise Invalid(
            f"name {name!r} must match {NAME_PATTERN} (letters, digits, _ and -)", field="name"
        )
    return name


def check_storable(content: str) -> None:
    """PostgreSQL text holds neither NUL nor unpaired surrogates: refuse them as input
    errors here rather than fail in the INSERT."""
    if "\x00" in content:
        raise Invalid("content must not contain NUL characters", field="content")
    try:
        content.encode("utf-8")
    except UnicodeEncodeError:
        raise Invalid("content must be valid Unicode text", field="content") from None


def parse_config(kind: str, name: str, content: str) -> Config:
    check_kind(kind)
    check_name(name)
    check_storable(content)
    if kind == "template":
        return parse_template(name, content)
    if kind == "engine":
        return parse_engine(name, content)
    return parse_profile(name, content)


def converted(kind: str, name: str, content: str) -> str:
    """`content` in our format: a Parpaing profile or engine is converted (the result
    says where it came from); anything else is returned as it is."""
    if kind not in ("profile", "engine"):
        return content
    check_name(name)
    check_storable(content)
    data = _toml(kind, name, content)
    if not legacy.is_parpaing(kind, data):
        return content
    if kind == "profile":
        return legacy.convert_profile(name, data)
    return legacy.convert_engine(name, data)


def parse_profile(name: str, content: str) -> Profile:
    return _validate(
        Profile, "profile", name, _named(_toml("profile", name, content), "name", name)
    )


def parse_engine(name: str, content: str) -> Engine:
    return _validate(Engine, "engine", name, _named(_toml("engine", name, content), "id", name))


def parse_template(name: str, content: str) -> Template:
    check_syntax(name, content)
    return Template(name=name, source=content)


def _toml(kind: str, name: str, content: str) -> dict[str, Any]:
    try:
        return tomllib.loads(content)
    except tomllib.TOMLDecodeError as error:
        # tomllib's message already ends with "(at line N, column M)".
        raise Invalid(f"{kind} {name!r}: invalid TOML: {error}", field="content") from None


def _named(data: dict[str, Any], key: str, name: str) -> dict[str, Any]:
    """The config's own name is its key in the store; the file may repeat it, not contradict it."""
    declared = data.get(key, name)
    if declared != name:
        raise Invalid(
            f"{key} {declared!r} does not match the config name {name!r}", field="content"
        )
    return {**data, key: name}


def _validate(model: type[M], kind: str, name: str, data: dict[str, Any]) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise Invalid(f"{kind} {name!r}: {_describe(error)}", field="content") from None


def _describe(error: ValidationError) -> str:
    problems = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {message}")
    return "; ".join(problems)
