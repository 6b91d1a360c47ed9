#!/usr/bin/python3
"""Print squid's config: the template given as argv[1] with its @NAME@ placeholders filled
from the environment. Each value is checked against a strict pattern first, so nothing
from the environment can add squid syntax; a bad value stops the container, naming the
variable. Standard library only (the image's python3); also run by the unit tests.
"""

from __future__ import annotations

import os
import re
import sys

MAX_CACHE_SECONDS = 60


class Refused(Exception):
    """A setting that cannot be rendered; the message names it."""


def _integer(name: str, default: str, low: int, high: int) -> int:
    text = os.environ.get(name, "") or default
    if not re.fullmatch(r"[0-9]{1,19}", text) or not low <= int(text) <= high:
        raise Refused(f"{name} must be a whole number from {low} to {high}")
    return int(text)


def values() -> dict[str, str]:
    """Each placeholder's text, from the environment (defaults as tower's settings)."""
    cache = _integer("EGRESS_AUTH_CACHE_SECONDS", "1", 0, MAX_CACHE_SECONDS)
    limit = _integer("EGRESS_MAX_BYTES", "0", 0, 1 << 62)
    return {
        "AUTH_CACHE_SECONDS": str(cache),
        # 0: no limit of squid's own (tower still bounds each job's total).
        "MAX_BYTES": f"{limit} bytes" if limit else "none",
    }


def render(template: str, found: dict[str, str]) -> str:
    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in found:
            raise Refused(f"the template names @{name}@, which has no value")
        return found[name]

    return re.sub(r"@([A-Z_]+)@", fill, template)


def main(argv: list[str]) -> int:
    try:
        with open(argv[1], encoding="utf-8") as source:
            sys.stdout.write(render(source.read(), values()))
    except Refused as problem:
        print(f"parpaing-egress: {problem}", file=sys.stderr)
        return 64
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
