"""A Parpaing directory (profiles/, engines/, templates/, hooks/) as our configs.

Used by `parpaing configs import DIR`: the configs come out converted and in the order a
tower accepts them (templates and engines before the profiles that name them).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from tower.configs import legacy


def configs_in(root: Path) -> list[tuple[str, str, str]]:
    """(kind, name, content) for every config under `root`; LegacyInvalid naming the file
    for one that cannot be converted."""
    found: list[tuple[str, str, str]] = []
    templates = root / "templates"
    for path in sorted(templates.rglob("*.j2")) if templates.is_dir() else []:
        relative = path.relative_to(templates).as_posix()
        found.append(("template", legacy.template_name(relative), path.read_text("utf-8")))
    for path in _tomls(root / "engines"):
        found.append(("engine", path.stem, legacy.convert_engine(path.stem, _load(path))))
    hooks = _hooks(root / "hooks")
    for path in _tomls(root / "profiles"):
        found.append(("profile", path.stem, legacy.convert_profile(path.stem, _load(path), hooks)))
    return found


def _tomls(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.toml")) if folder.is_dir() else []


def _hooks(folder: Path) -> dict[str, str]:
    if not folder.is_dir():
        return {}
    return {
        path.name: path.read_text("utf-8") for path in sorted(folder.iterdir()) if path.is_file()
    }


def _load(path: Path) -> dict[str, object]:
    try:
        return tomllib.loads(path.read_text("utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise legacy.LegacyInvalid(f"{path}: invalid TOML: {error}", field="content") from None
