"""`parpaing migrate` and `parpaing doctor` as real processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tower.cli.admin import current_revision, head_revision
from tower.db.embedded import LocalPostgres, free_port

UNREACHABLE_DOCKER = "unix:///nonexistent/docker.sock"


def parpaing(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "STATE_DIR")}
    return subprocess.run(
        [sys.executable, "-m", "tower.cli", *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


class _Healthy(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *_: object) -> None:
        return None


@pytest.fixture
def gateway() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Healthy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join()


def lines_of(output: str, name: str) -> list[str]:
    """The finding line for check `name` and its fix line, if any."""
    lines = output.splitlines()
    for index, line in enumerate(lines):
        if line[7:].startswith(name):
            follow = lines[index + 1 : index + 2]
            return [line, *[f for f in follow if f.strip().startswith("fix:")]]
    raise AssertionError(f"no {name!r} line in:\n{output}")


# --- migrate -------------------------------------------------------------------------


def test_migrate_brings_an_empty_database_to_head(empty_database: str) -> None:
    assert asyncio.run(current_revision(empty_database)) is None
    done = parpaing("migrate", DATABASE_URL=empty_database)
    assert done.returncode == 0, done.stderr
    head = head_revision()
    assert f"at revision {head}" in done.stdout
    assert asyncio.run(current_revision(empty_database)) == head


def test_migrate_embedded_database_and_stop_it_again(tmp_path: Path) -> None:
    datadir = tmp_path / "state" / "postgres"
    done = parpaing("migrate", STATE_DIR=str(tmp_path / "state"))
    assert done.returncode == 0, done.stderr
    assert not (datadir / "postmaster.pid").exists(), "migrate left its server running"
    server = LocalPostgres(datadir).start()
    try:
        assert asyncio.run(current_revision(server.url)) == head_revision()
    finally:
        server.stop(mode="immediate")


def test_migrate_reports_an_unreachable_database_on_one_line() -> None:
    done = parpaing("migrate", DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/x")
    assert done.returncode == 1
    assert done.stderr.startswith("parpaing: migration of")
    assert len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr


# --- doctor --------------------------------------------------------------------------


def test_doctor_reports_unreachable_docker_with_a_fix(database_url: str, gateway: str) -> None:
    done = parpaing(
        "doctor", DATABASE_URL=database_url, DOCKER_HOST=UNREACHABLE_DOCKER, GATEWAY_URL=gateway
    )
    assert done.returncode == 1, done.stdout + done.stderr
    database = lines_of(done.stdout, "database")
    docker = lines_of(done.stdout, "docker")
    image = lines_of(done.stdout, "worker image")
    assert database[0].startswith("[ ok ]") and f"revision {head_revision()}" in database[0]
    assert docker[0].startswith("[FAIL]") and "unreachable" in docker[0]
    assert "start dockerd" in docker[1]
    assert image[0].startswith("[skip]")
    assert lines_of(done.stdout, "gateway")[0].startswith("[ ok ]")


def test_doctor_says_to_migrate_and_to_start_the_gateway(empty_database: str) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    done = parpaing(
        "doctor", DATABASE_URL=empty_database, DOCKER_HOST=UNREACHABLE_DOCKER, GATEWAY_URL=closed
    )
    assert done.returncode == 1
    database = lines_of(done.stdout, "database")
    gateway = lines_of(done.stdout, "gateway")
    assert database[0].startswith("[FAIL]") and "revision none" in database[0]
    assert "`parpaing migrate`" in database[1]
    assert gateway[0].startswith("[FAIL]") and "GATEWAY_URL" in gateway[1]


def test_doctor_reports_an_unreachable_database(gateway: str) -> None:
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    done = parpaing(
        "doctor", DATABASE_URL=nowhere, DOCKER_HOST=UNREACHABLE_DOCKER, GATEWAY_URL=gateway
    )
    database = lines_of(done.stdout, "database")
    assert done.returncode == 1
    assert database[0].startswith("[FAIL]") and "cannot connect" in database[0]
    assert "DATABASE_URL" in database[1]


NO_PROVIDER_KEYS = {
    "ANTHROPIC_API_KEY": "",
    "CLAUDE_CODE_OAUTH_TOKEN": "",
    "OPENAI_API_KEY": "",
    "GEMINI_API_KEY": "",
}


def test_doctor_lists_the_providers_with_a_credential_never_the_key(
    database_url: str, gateway: str
) -> None:
    secret = "sk-ant-doctor-must-not-print-this"
    env = {"DATABASE_URL": database_url, "DOCKER_HOST": UNREACHABLE_DOCKER, "GATEWAY_URL": gateway}
    keyed = parpaing("doctor", **env, **(NO_PROVIDER_KEYS | {"ANTHROPIC_API_KEY": secret}))
    providers = lines_of(keyed.stdout, "providers")
    assert providers[0].startswith("[ ok ]") and providers[0].endswith("anthropic"), keyed.stdout
    assert secret not in keyed.stdout + keyed.stderr
    keyless = parpaing("doctor", **env, **NO_PROVIDER_KEYS)
    providers = lines_of(keyless.stdout, "providers")
    assert providers[0].startswith("[FAIL]") and "ANTHROPIC_API_KEY" in providers[1]
