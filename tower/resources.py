"""Where the files tower ships beside its code are, as real directories.

The repository keeps them at its top (profiles/, engines/, templates/, db/, worker/,
gateway/, egress/, ui/); setup.py installs them into the package, so a wheel carries them:
tower/_shipped/<name>, and tower/ui for the dashboard (older, kept where it was). They are
found with importlib.resources, in the installed package first. A checkout, an editable
install (setuptools' editable finder maps package_dir packages to their directories for
imports, but importlib.resources cannot reach data directories mapped under a regular
package) and the tower image (an editable install in /app) have them at the repository's
top instead, beside the tower package: that is where they are looked for second.

Callers get a filesystem Path, because Docker builds a context directory and Alembic reads
a script directory. When tower is installed as files (pip always does that), the package's
resources are files already; an importer that hands out no real files (tower run from a
zip archive) is not supported.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Literal

# What ships, by its directory at the repository's top:
#   profiles, engines, templates   the shipped configs, seeded into the database at start
#   db                             Alembic's script directory (env.py, versions/)
#   worker, gateway, egress        the images' Docker build contexts
#   ui                             the dashboard's static files (installed as tower/ui)
Shipped = Literal["profiles", "engines", "templates", "db", "worker", "gateway", "egress", "ui"]

PACKAGE = "tower"
# Installed location of the repository's top-level data directories (setup.py).
SHIPPED = "_shipped"
# A checkout (or an editable install of one): the directory holding the tower package.
CHECKOUT = Path(__file__).resolve().parents[1]


def shipped(name: Shipped) -> Path:
    """The directory `name` of the repository's top, wherever this installation has it.

    Looked for in the installed package (tower/_shipped/<name>; the dashboard: tower/ui),
    then at the top of a checkout. When neither exists, the installed location is
    returned: whoever uses it fails naming the path it expected.
    """
    installed = _in_package(name if name == "ui" else f"{SHIPPED}/{name}")
    if installed is not None and installed.is_dir():
        return installed
    beside = CHECKOUT / name
    if beside.is_dir():
        return beside
    return installed if installed is not None else beside


def _in_package(relative: str) -> Path | None:
    traversable = files(PACKAGE).joinpath(*relative.split("/"))
    # A plain file-system installation hands out pathlib paths; anything else (a zip
    # archive) has no directory Docker or Alembic could read.
    return traversable if isinstance(traversable, Path) else None
