"""`parpaing serve` as a real process: external database, embedded database, clean stops."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.serving import wait_until_answering
from tower.cli.database import redacted
from tower.db.embedded import LocalPostgres, free_port

START_DEADLINE = 90.0
STOP_DEADLINE = 30.0
PARPAING = (sys.executable, "-m", "tower.cli")


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    url: str
    stderr_path: Path
    stdout: str = ""

    def output(self) -> str:
        return self.stdout + self.stderr_path.read_text()


def cli_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "STATE_DIR")}
    return {**env, "TOWER_RUNNER": "simulated", **values}


@contextmanager
def serve(
    tmp_path: Path, env: dict[str, str], host: str = "127.0.0.1", *options: str
) -> Iterator[Served]:
    """`parpaing serve` listening on `host`; reached on loopback either way."""
    port = free_port()
    stderr_path = tmp_path / f"serve-{port}.err"
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            [*PARPAING, "serve", "--host", host, "--port", str(port), *options],
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            bufsize=0,
        )
    served = Served(process, f"http://127.0.0.1:{port}", stderr_path)
    try:
        wait_until_up(served)
        yield served
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def wait_until_up(served: Served) -> None:
    def output() -> str:
        collect_stdout(served)
        return served.output()

    wait_until_answering(served.process, served.url, output, START_DEADLINE)


def collect_stdout(served: Served) -> None:
    """Read whatever serve printed so far, without blocking."""
    assert served.process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(served.process.stdout, selectors.EVENT_READ)
    while selector.select(timeout=0.2):
        chunk = os.read(served.process.stdout.fileno(), 65536)
        if not chunk:
            break
        served.stdout += chunk.decode()


def stop(served: Served, signum: int) -> int:
    served.process.send_signal(signum)
    code = served.process.wait(timeout=STOP_DEADLINE)
    collect_stdout(served)
    return code


def printed_database_url(served: Served) -> str:
    collect_stdout(served)
    for line in served.stdout.splitlines():
        if line.startswith("parpaing: database "):
            return line.split()[2]
    pytest.fail(f"serve did not print its database:\n{served.output()}")


def test_serve_with_database_url_answers_and_stops_on_sigterm(
    database_url: str, tmp_path: Path
) -> None:
    with serve(tmp_path, cli_env(DATABASE_URL=database_url)) as served:
        spec = httpx.get(served.url + "/openapi.json").json()
        health = httpx.get(served.url + "/health")
        assert printed_database_url(served) == redacted(database_url)
        code = stop(served, signal.SIGTERM)
    assert "/jobs" in spec["paths"]
    assert health.json()["checks"]["db"] == "ok"
    assert code == 0, served.output()
    assert "parpaing: stopped" in served.output()


def submit(base_url: str) -> str:
    body = {"agent_id": "persist", "engine": "claude-code", "prompt": "print kept"}
    response = httpx.post(base_url + "/jobs", json=body)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    finished = httpx.get(base_url + f"/jobs/{job_id}/wait", params={"timeout": 30}, timeout=40)
    assert finished.json()["status"] == "completed", finished.text
    return job_id


def test_embedded_database_keeps_its_data_across_restarts(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    env = cli_env(STATE_DIR=str(state_dir))
    datadir = state_dir / "postgres"
    try:
        with serve(tmp_path, env) as first:
            first_url = printed_database_url(first)
            job_id = submit(first.url)
            assert stop(first, signal.SIGINT) == 0, first.output()
        assert not (datadir / "postmaster.pid").exists(), "embedded server left running"
        assert str(datadir) in first.output()

        with serve(tmp_path, env) as second:
            assert printed_database_url(second).startswith("postgresql://")
            again = httpx.get(second.url + f"/jobs/{job_id}")
            assert stop(second, signal.SIGTERM) == 0, second.output()
    finally:
        LocalPostgres(datadir).stop(mode="immediate")
    assert first_url.startswith("postgresql://postgres@127.0.0.1:")
    assert again.status_code == 200, again.text
    assert again.json()["result"] == "kept"
    assert not (datadir / "postmaster.pid").exists()


def test_serve_with_an_unreachable_database_fails_on_one_line(tmp_path: Path) -> None:
    nowhere = f"postgresql://postgres:hunter2@127.0.0.1:{free_port()}/postgres"
    done = subprocess.run(
        [*PARPAING, "serve", "--port", str(free_port())],
        env=cli_env(DATABASE_URL=nowhere),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("parpaing: cannot connect to database")
    assert len(done.stderr.strip().splitlines()) == 1
    assert "hunter2" not in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("options", "env"),
    [
        (("--host", "0.0.0.0"), {}),
        (("--host", "192.168.1.10"), {}),
        (("--host", "tower.lan"), {}),
        ((), {"TOWER_HOST": "0.0.0.0"}),  # the Docker image's setting
    ],
)
def test_serve_refuses_a_keyless_tower_off_loopback(
    options: tuple[str, ...], env: dict[str, str]
) -> None:
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    done = subprocess.run(
        [*PARPAING, "serve", *options, "--port", str(free_port())],
        env=cli_env(DATABASE_URL=nowhere, TOWER_API_KEY="", INSECURE_NO_AUTH="", **env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # Refused before anything starts: not even the database is tried.
    assert done.returncode == 1
    assert done.stderr.startswith("parpaing: refusing to serve on "), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    for remedy in ("TOWER_API_KEY", "--insecure-no-auth", "INSECURE_NO_AUTH=true"):
        assert remedy in done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize(
    ("options", "env", "warned"),
    [
        (("--insecure-no-auth",), {}, True),
        ((), {"INSECURE_NO_AUTH": "true"}, True),
        ((), {"TOWER_API_KEY": "serve-key"}, False),
    ],
)
def test_serve_off_loopback_with_a_key_or_consent(
    database_url: str,
    tmp_path: Path,
    options: tuple[str, ...],
    env: dict[str, str],
    warned: bool,
) -> None:
    values = {"TOWER_API_KEY": "", "INSECURE_NO_AUTH": "", **env}
    with serve(tmp_path, cli_env(DATABASE_URL=database_url, **values), "0.0.0.0", *options) as on:
        rebound = httpx.get(on.url + "/openapi.json", headers={"Host": "evil.example"})
        assert stop(on, signal.SIGTERM) == 0, on.output()
    assert ("WARNING" in on.output() and "WITHOUT AN API KEY" in on.output()) is warned
    # Without a key, only the loopback names are served (DNS rebinding); a key serves any.
    assert rebound.status_code == (421 if warned else 200)
