"""Package layout only; everything else is in pyproject.toml.

Tower's data lives in directories at the top of the repository, where the docs, the compose
files, the Dockerfiles and the tests refer to them. They are installed into the package, so
an installed wheel carries them too; tower/resources.py finds them either way:

- ui/ (the dashboard's static files, DESIGN §2) as tower/ui;
- profiles/, engines/, templates/ (shipped configs), db/ (the migrations), worker/,
  gateway/ and egress/ (the images' Docker build contexts) as tower/_shipped/<name>.

Every file under them goes in (hidden ones such as worker/.dockerignore too: a build context
is the whole directory), except bytecode caches. pyproject.toml alone cannot map directories
outside tower/ into it while also discovering tower's packages, hence this file.
"""

from __future__ import annotations

import os

from setuptools import find_packages, setup

# package -> its directory in the repository.
MAPPED = {
    "tower.ui": "ui",
    **{
        f"tower._shipped.{name}": name
        for name in ("profiles", "engines", "templates", "db", "worker", "gateway", "egress")
    },
}
EVERY_FILE = ["**/*", "**/.*"]  # glob's * skips names starting with a dot
BYTECODE = ["*.pyc", "__pycache__/*"]


def subpackages(package: str, directory: str) -> list[str]:
    """`package` and one package per subdirectory of `directory` (as setuptools expects of
    directories holding .py files, such as db/versions)."""
    found = [package]
    for parent, children, _files in os.walk(directory):
        children[:] = sorted(c for c in children if c != "__pycache__" and not c.startswith("."))
        relative = os.path.relpath(parent, directory)
        if relative != ".":
            found.append(f"{package}.{relative.replace(os.sep, '.')}")
    return found


# A partial tree (the tower image's context has no gateway/) maps what it has.
present = {package: directory for package, directory in MAPPED.items() if os.path.isdir(directory)}
data_packages = [name for package, path in present.items() for name in subpackages(package, path)]

setup(
    packages=[*find_packages(include=["tower", "tower.*"]), *data_packages],
    package_dir=present,
    package_data={package: EVERY_FILE for package in present},
    exclude_package_data={package: BYTECODE for package in present},
)
