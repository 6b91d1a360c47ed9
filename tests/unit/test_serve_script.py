"""scripts/serve on a machine where no Docker engine answers and it cannot set one up (not
root, or no apt): it stops before serving and says exactly what to run. The script runs
for real, with a PATH that holds only what it needs (and a `docker` that fails, or none)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def fake_path(tmp_path: Path, docker: str | None) -> str:
    """A PATH with bash and dirname, no apt-get, and `docker` as given (a script body)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname"):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    if docker is not None:
        (bin_dir / "docker").write_text(f"#!{shutil.which('bash')}\n{docker}\n")
        (bin_dir / "docker").chmod(0o755)
    return str(bin_dir)


def serve(path: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TOWER_RUNNER", "DOCKER_HOST")}
    return subprocess.run(
        [str(ROOT / "scripts" / "serve")],
        env={**env, "PATH": path},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_without_docker_it_stops_and_says_what_to_run(tmp_path: Path) -> None:
    ran = serve(fake_path(tmp_path, docker=None))
    assert ran.returncode == 1, ran.stdout + ran.stderr
    assert "Docker is not installed" in ran.stderr
    assert "sudo scripts/setup-docker" in ran.stderr
    assert "Nothing was started" in ran.stderr
    assert "parpaing" not in ran.stdout  # neither the install nor `parpaing serve` ran


def test_with_a_docker_engine_that_does_not_answer_it_stops_too(tmp_path: Path) -> None:
    ran = serve(fake_path(tmp_path, docker="echo 'Cannot connect' >&2; exit 1"))
    assert ran.returncode == 1, ran.stdout + ran.stderr
    assert "its engine does not answer" in ran.stderr
    assert "sudo scripts/setup-docker" in ran.stderr
