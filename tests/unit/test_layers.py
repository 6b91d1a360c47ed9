"""The layers of docs/architecture.md are a checked contract: import-linter, from
pyproject.toml, runs in scripts/test. These tests show it passes on the tree and that it
would fail the run on a forbidden import."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(package_parent: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports with the project's contracts on the `tower` found in package_parent."""
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=package_parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def tower_copy(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "tower", tmp_path / "tower", ignore=shutil.ignore_patterns("_shipped"))
    return tmp_path


def test_the_tree_keeps_every_contract(tower_copy: Path) -> None:
    result = lint_imports(tower_copy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def add_import(module: Path, statement: str) -> None:
    module.write_text(module.read_text() + f"\n{statement}  # a forbidden import\n")


@pytest.mark.parametrize(
    ("module", "statement", "contract"),
    [
        # The ground floor importing a domain.
        ("db/pool.py", "import tower.jobs.service", "tower's layers"),
        # A domain importing the one above it (the old jobs <-> queue tangle).
        ("jobs/service.py", "import tower.queue.dispatcher", "tower's layers"),
        # SQL importing the web face.
        ("queue/queries.py", "import fastapi", "only routes and the app speak HTTP"),
        # The job spec calling Docker.
        ("execution/spec.py", "import docker", "Docker calls live behind the runner"),
        # The runtime importing the warm pool above it.
        ("execution/docker/containers.py", "import tower.execution.pool.warm", "execution:"),
    ],
)
def test_a_forbidden_import_fails_the_run(
    tower_copy: Path, module: str, statement: str, contract: str
) -> None:
    add_import(tower_copy / "tower" / module, statement)
    result = lint_imports(tower_copy)
    assert result.returncode != 0
    broken = result.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken.replace("\n", " "), result.stdout
    assert "tower." + module.removesuffix(".py").replace("/", ".") in broken
