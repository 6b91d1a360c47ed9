"""The shipped defaults: profiles/, engines/ and templates/ (tower.resources finds them)."""

from __future__ import annotations

from pathlib import Path

from tower import resources

# kind -> (directory, file pattern). A template file may be `name.j2` or `name.md.j2`:
# its config name is the file name up to the first dot.
LAYOUT: dict[str, tuple[resources.Shipped, str]] = {
    "profile": ("profiles", "*.toml"),
    "engine": ("engines", "*.toml"),
    "template": ("templates", "*.j2"),
}

def shipped_defaults(root: Path | None = None) -> list[tuple[str, str, str]]:
    """(kind, name, content) for every shipped config file, in a stable order; from the
    directories under `root` instead when given (tests)."""
    found = []
    for kind, (directory, pattern) in LAYOUT.items():
        folder = resources.shipped(directory) if root is None else root / directory
        for path in sorted(folder.glob(pattern)):
            found.append((kind, path.name.split(".", 1)[0], path.read_text(encoding="utf-8")))
    return found
