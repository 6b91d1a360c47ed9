"""The embedded PostgreSQL is tower's alone: other local users cannot connect, its secrets
are in private files, no directory above it is opened up, and `parpaing serve` brings it
back when it dies. As root (as CI runs), as tower does in all-in-one mode on a server."""

from __future__ import annotations

import os
import pwd
import select
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.integration.test_cli_serve import cli_env, collect_stdout, serve, stop, submit
from tower.db import embedded
from tower.db.embedded import LocalPostgres

OUTSIDER = "parpaing-outsider"
COMEBACK_DEADLINE = 60.0


def outsider() -> pwd.struct_passwd:
    """Another local user (made when missing). These tests need root to be one user
    and act as another: without it they fail, they do not pass by skipping."""
    assert os.geteuid() == 0, "run as root (as CI does): these tests switch users"
    try:
        return pwd.getpwnam(OUTSIDER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", OUTSIDER], check=True)
        return pwd.getpwnam(OUTSIDER)


def as_outsider(argv: list[str]) -> subprocess.CompletedProcess[str]:
    user = outsider()
    env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"}
    return subprocess.run(
        argv,
        user=user.pw_uid,
        group=user.pw_gid,
        extra_groups=[],
        cwd="/",
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def psql_as_outsider(server: LocalPostgres, host: str) -> subprocess.CompletedProcess[str]:
    argv = [server.binary("psql"), "-w", "-h", host, "-p", str(server.port)]
    return as_outsider([*argv, "-U", "postgres", "-d", "postgres", "-c", "select 1"])


async def answers(url: str) -> int:
    connection = await asyncpg.connect(url)
    try:
        value: int = await connection.fetchval("select 1")
        return value
    finally:
        await connection.close()


@pytest.fixture
def server(tmp_path: Path) -> LocalPostgres:
    outsider()
    return LocalPostgres(tmp_path / "state" / "postgres")


async def test_another_local_user_cannot_connect(server: LocalPostgres) -> None:
    server.start()
    try:
        over_tcp = psql_as_outsider(server, "127.0.0.1")
        over_socket = psql_as_outsider(server, str(server.datadir))
        read_password = as_outsider(["cat", str(server.password_file)])
        assert await answers(server.url) == 1
    finally:
        server.stop()
    assert over_tcp.returncode != 0, over_tcp.stdout
    assert "password" in over_tcp.stderr, over_tcp.stderr
    assert over_socket.returncode != 0, over_socket.stdout
    assert read_password.returncode != 0
    assert server.password not in read_password.stdout


async def test_secrets_and_socket_are_in_private_places(server: LocalPostgres) -> None:
    server.start()
    try:
        socket_file = server.datadir / f".s.PGSQL.{server.port}"
        assert stat.S_ISSOCK(socket_file.stat().st_mode)
        hba = (server.datadir / "pg_hba.conf").read_text()
    finally:
        server.stop()
    assert stat.S_IMODE(server.password_file.stat().st_mode) == 0o600
    assert server.password_file.stat().st_uid == os.geteuid()  # tower's, not postgres's
    assert stat.S_IMODE(server.datadir.stat().st_mode) == 0o700
    assert len(server.password) >= 32
    rules = [line.split() for line in hba.splitlines() if line and not line.startswith("#")]
    assert rules and all(rule[-1] == "scram-sha-256" for rule in rules), hba


async def test_a_trusting_data_directory_from_an_older_version_is_secured(
    server: LocalPostgres,
) -> None:
    # What the older version left: pg_hba trusting everyone, and no password anywhere.
    server.start()
    server.stop()
    (server.datadir / "pg_hba.conf").write_text("local all all trust\nhost all all all trust\n")
    server.password_file.unlink()

    server.start()
    try:
        over_tcp = psql_as_outsider(server, "127.0.0.1")
        assert await answers(server.url) == 1
    finally:
        server.stop()
    assert over_tcp.returncode != 0, over_tcp.stdout
    assert "password" in over_tcp.stderr, over_tcp.stderr


async def test_no_parent_directory_is_opened_up(tmp_path: Path) -> None:
    outsider()
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    server = LocalPostgres(private / "state" / "postgres")
    parents = [private, *private.parents]
    before = {each: stat.S_IMODE(each.stat().st_mode) for each in parents}
    server.start()
    try:
        assert await answers(server.url) == 1
    finally:
        server.stop()
    after = {each: stat.S_IMODE(each.stat().st_mode) for each in parents}
    assert after == before


async def test_binaries_closed_to_the_server_user_run_from_a_copy_tower_makes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A virtualenv in a home directory the server's user may not enter (root's is 0700).
    outsider()
    private = tmp_path / "home"
    private.mkdir(mode=0o700)
    site = embedded.POSTGRES_BIN_PATH.parents[2]
    for part in ("pgserver/pginstall", "pgserver.libs"):
        shutil.copytree(site / part, private / "site" / part, symlinks=True)
    monkeypatch.setattr(embedded, "POSTGRES_BIN_PATH", private / "site/pgserver/pginstall/bin")
    server = LocalPostgres(tmp_path / "state" / "postgres")
    server.start()
    try:
        executable = Path(os.readlink(f"/proc/{postmaster_pid(server.datadir)}/exe"))
        assert await answers(server.url) == 1
    finally:
        server.stop()
        if executable.is_relative_to(embedded.RUNTIME_ROOT):
            shutil.rmtree(executable.parents[3])  # this test's copy: its key is its path
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    assert executable.is_relative_to(embedded.RUNTIME_ROOT), executable


def postmaster_pid(datadir: Path) -> int:
    return int((datadir / "postmaster.pid").read_text().split()[0])


def wait_for_exit(pid: int) -> None:
    """Woken by the process's exit (a pidfd), not by a clock."""
    try:
        descriptor = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        ready, _, _ = select.select([descriptor], [], [], COMEBACK_DEADLINE)
        assert ready, f"process {pid} did not exit"
    finally:
        os.close(descriptor)


def wait_until_database_ok(url: str) -> None:
    # Bounded poll of the condition itself: no event says "the pool reconnected".
    deadline = time.monotonic() + COMEBACK_DEADLINE
    while time.monotonic() < deadline:
        health = httpx.get(url + "/health", timeout=5)
        if health.status_code == 200 and health.json()["checks"]["db"] == "ok":
            return
        time.sleep(0.2)
    pytest.fail(f"the database did not come back within {COMEBACK_DEADLINE}s")


def test_serve_brings_a_killed_embedded_server_back(tmp_path: Path) -> None:
    datadir = tmp_path / "state" / "postgres"
    env = cli_env(STATE_DIR=str(tmp_path / "state"))
    try:
        with serve(tmp_path, env) as served:
            killed = postmaster_pid(datadir)
            os.kill(killed, signal.SIGKILL)
            wait_for_exit(killed)
            wait_until_database_ok(served.url)
            submit(served.url)  # jobs run again, not only /health
            assert stop(served, signal.SIGTERM) == 0, served.output()
    finally:
        LocalPostgres(datadir).stop(mode="immediate")
    # Once: a dead server not yet reaped by its adoptive parent is not taken for alive.
    assert served.output().count("died; restarting it") == 1, served.output()
    assert f"embedded PostgreSQL (pid {killed}) died; restarting it" in served.output()
    assert "embedded PostgreSQL restarted" in served.output()
    assert not (datadir / "postmaster.pid").exists(), "embedded server left running"


def test_serve_exits_non_zero_when_the_embedded_server_stays_dead(tmp_path: Path) -> None:
    datadir = tmp_path / "state" / "postgres"
    env = cli_env(STATE_DIR=str(tmp_path / "state"))
    try:
        with serve(tmp_path, env) as served:
            # PostgreSQL refuses a data directory others may read: every restart fails.
            datadir.chmod(0o755)
            killed = postmaster_pid(datadir)
            os.kill(killed, signal.SIGKILL)
            code = served.process.wait(timeout=COMEBACK_DEADLINE)
            collect_stdout(served)
    finally:
        datadir.chmod(0o700)
        LocalPostgres(datadir).stop(mode="immediate")
    output = served.output()
    assert code == 1, output
    assert "embedded PostgreSQL restart 5/5 failed" in output
    assert f"embedded PostgreSQL in {datadir} died and did not restart" in output
