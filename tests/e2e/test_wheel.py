"""Parpaing installed from its wheel, away from the checkout: migrate, serve, build images.

Nothing is mocked. The wheel is built from the checkout's files (tracked and new ones, as
`git ls-files` lists them, copied first so that the build writes nothing into the checkout
and no stale build/ directory leaks into the wheel), installed with its dependencies into a
fresh virtual environment in a temporary directory, and its `parpaing` command runs from
another temporary directory: whatever tower finds there, it finds in the installed package,
never beside the sources. Docker is required (tests/e2e/conftest.py fails loudly without it).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import httpx
import pytest
from alembic.script import ScriptDirectory
from docker.errors import ImageNotFound

from tests.support.serving import wait_until_answering
from tower.configs.defaults import shipped_defaults
from tower.db.embedded import LocalPostgres, free_port
from tower.db.migrate import alembic_config

CHECKOUT = Path(__file__).resolve().parents[2]
INSTALL_TIMEOUT = 900.0  # dependencies come from pip's cache or index
COMMAND_TIMEOUT = 300.0
START_DEADLINE = 120.0  # the embedded PostgreSQL's first start runs initdb
STOP_DEADLINE = 60.0
# What the installed package must carry: the repository's directories, as
# tower.resources.shipped names them.
RESOURCES = ("profiles", "engines", "templates", "db", "worker", "gateway", "egress", "ui")
# Settings an outer environment may hold that must not steer the installed tower.
UNSET = (
    *("DATABASE_URL", "STATE_DIR", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"),
    *("WORKER_IMAGE", "GATEWAY_IMAGE", "EGRESS_IMAGE", "TOWER_RUNNER", "TOWER_API_KEY"),
    *("TOWER_HOST", "TOWER_PORT"),
)


# Run by the installed Python: where its tower and each of tower.resources' directories are.
WHERE = """
import json, sys, tower
from tower import resources
found = {name: str(resources.shipped(name)) for name in sys.argv[1:]}
print(json.dumps({"tower": tower.__file__, **found}))
"""


@dataclass(frozen=True)
class Installation:
    venv: Path
    cwd: Path  # outside the checkout
    sources: Path  # the snapshot the wheel was built from

    def env(self, **values: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in UNSET}
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        return {**env, **values}

    def run(self, *argv: str, timeout: float = COMMAND_TIMEOUT, **values: str) -> str:
        """Run a command of the installation; its output, or the test fails with it."""
        done = subprocess.run(
            [str(self.venv / "bin" / argv[0]), *argv[1:]],
            cwd=self.cwd,
            env=self.env(**values),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        output = done.stdout + done.stderr
        if done.returncode != 0:
            pytest.fail(f"{' '.join(argv)} exited with {done.returncode}:\n{output}")
        return output


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installation:
    root = tmp_path_factory.mktemp("wheel")
    assert not root.resolve().is_relative_to(CHECKOUT), f"{root} is inside the checkout"
    sources = snapshot(CHECKOUT, root / "src")
    _check([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(root), sources])
    (wheel,) = root.glob("parpaing-*.whl")
    venv = root / "venv"
    _check([sys.executable, "-m", "venv", str(venv)])
    _check([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)])
    cwd = root / "elsewhere"
    cwd.mkdir()
    return Installation(venv, cwd, sources)


def snapshot(checkout: Path, target: Path) -> Path:
    """Copy the files a commit of the checkout would hold now (tracked and new, not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=checkout,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = checkout / name
        if source.is_file():  # a tracked file may have been deleted in the working tree
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def _check(argv: list[str | Path]) -> None:
    done = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=INSTALL_TIMEOUT
    )
    if done.returncode != 0:
        pytest.fail(f"{' '.join(map(str, argv))} failed:\n{done.stdout}{done.stderr}")


def files_under(directory: Path) -> dict[str, int]:
    """Relative name -> permission bits of every file, bytecode caches left out."""
    return {
        str(path.relative_to(directory)): path.stat().st_mode & 0o777
        for path in directory.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


# --- the package ----------------------------------------------------------------------


def test_the_installed_package_carries_every_shipped_directory(installed: Installation) -> None:
    found = json.loads(installed.run("python", "-c", WHERE, *RESOURCES))
    package = Path(found.pop("tower")).parent
    assert package.is_relative_to(installed.venv), f"tower imported from {package}"
    for name in RESOURCES:
        path = Path(found[name])
        assert path.is_relative_to(package), f"{name}: {path} is not in the installed package"
        # Every file, hidden (worker/.dockerignore) and nested (worker/build/) ones included,
        # with its executable bits (build/with-ca runs in the image builds).
        assert files_under(path) == files_under(installed.sources / name), name


# --- the commands ---------------------------------------------------------------------


def test_migrate_brings_a_fresh_database_to_the_head_revision(
    installed: Installation, empty_database: str
) -> None:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    output = installed.run("parpaing", "migrate", DATABASE_URL=empty_database)
    assert f"is at revision {head}" in output, output


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def served(installed: Installation, tmp_path: Path) -> Iterator[Server]:
    """`parpaing serve` with its embedded PostgreSQL, data in a temporary state dir."""
    port = free_port()
    state = tmp_path / "state"
    log = tmp_path / "serve.log"
    env = installed.env(STATE_DIR=str(state), TOWER_RUNNER="simulated")
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(installed.venv / "bin" / "parpaing"), "serve", "--port", str(port)],
            cwd=installed.cwd,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    server = Server(process, f"http://127.0.0.1:{port}", log)
    try:
        wait_until_up(server)
        yield server
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        LocalPostgres(state / "postgres").stop(mode="immediate")


def wait_until_up(server: Server) -> None:
    wait_until_answering(server.process, server.url, server.output, START_DEADLINE)


def test_serve_seeds_the_shipped_configs_and_runs_a_job(served: Server) -> None:
    profiles = httpx.get(served.url + "/profiles", timeout=10)
    dashboard = httpx.get(served.url + "/ui/", timeout=10)
    body = {"agent_id": "wheel", "engine": "claude-code", "prompt": "hi", "dry_run": True}
    submitted = httpx.post(served.url + "/jobs", json=body, timeout=10)
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["job_id"]
    finished = httpx.get(
        served.url + f"/jobs/{job_id}/wait", params={"timeout": 60}, timeout=70
    ).json()
    served.process.send_signal(signal.SIGTERM)
    code = served.process.wait(timeout=STOP_DEADLINE)

    shipped = {name for kind, name, _ in shipped_defaults() if kind == "profile"}
    assert profiles.status_code == 200, profiles.text
    assert {p["name"] for p in profiles.json()["profiles"]} == shipped
    assert dashboard.status_code == 200
    assert "<html" in dashboard.text.lower()
    assert finished["status"] == "completed", finished
    assert code == 0, served.output()
    assert "parpaing: stopped" in served.output()


def test_images_build_makes_the_images_the_checkout_makes(
    installed: Installation,
    docker_client: docker.DockerClient,
    worker_image: str,
    gateway_image: str,
    egress_image: str,
) -> None:
    # Throwaway tags: the suite's images stay as its fixtures built them (from the checkout).
    tag = uuid.uuid4().hex[:12]
    built = {
        worker_image: f"parpaing-wheel-worker:{tag}",
        gateway_image: f"parpaing-wheel-gateway:{tag}",
        egress_image: f"parpaing-wheel-egress:{tag}",
    }
    try:
        output = installed.run(
            "parpaing",
            "images",
            "build",
            WORKER_IMAGE=built[worker_image],
            GATEWAY_IMAGE=built[gateway_image],
            EGRESS_IMAGE=built[egress_image],
        )
        ready = f"ready: {built[worker_image]} {built[gateway_image]} {built[egress_image]}"
        assert ready in output, output
        for reference, ours in built.items():
            # Same layers: the installed build contexts are the checkout's (the labels may
            # differ, the worker context's digest counting the bytecode pip compiled).
            layers = docker_client.images.get(ours).attrs["RootFS"]["Layers"]
            assert layers == docker_client.images.get(reference).attrs["RootFS"]["Layers"], ours
    finally:
        for ours in built.values():
            with contextlib.suppress(ImageNotFound):
                docker_client.images.remove(ours)
