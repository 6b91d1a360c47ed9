"""The shipped defaults: profiles/, engines/ and templates/ at the repository root."""

from __future__ import annotations

from pathlib import Path

import tower

ROOT = Path(tower.__file__).resolve().parents[1]

# kind -> (directory, file pattern). A template file may be `name.j2` or `name.md.j2`:
# its config name is the file name up to the first dot.
LAYOUT = {
    "profile": ("profiles", "*.toml"),
    "engine": ("engines", "*.toml"),
    "template": ("templates", "*.j2"),
}


def shipped_defaults(root: Path = ROOT) -> list[tuple[str, str, str]]:
    """(kind, name, content) for every shipped config file, in a stable order."""
    found = []
    for kind, (directory, pattern) in LAYOUT.items():
        for path in sorted((root / directory).glob(pattern)):
            found.append((kind, path.name.split(".", 1)[0], path.read_text(encoding="utf-8")))
    return found
