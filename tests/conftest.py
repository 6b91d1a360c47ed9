from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import hygiene
from tests.support.postgres import create_database, create_empty_database, start_server
from tower.configs import renderer
from tower.db.embedded import LocalPostgres

# Towers stopped at a test's end hand their running jobs back at once, instead of giving
# them the production default grace; tests of the grace set it explicitly. Read by every
# Settings() in this process and inherited by the tower processes tests start.
os.environ.setdefault("SHUTDOWN_GRACE_SECONDS", "0")


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPostgres]:
    server = start_server(Path(tmp_path_factory.mktemp("postgres")))
    yield server
    server.stop(mode="immediate")


@pytest.fixture
async def database_url(pg_server: LocalPostgres) -> str:
    return await create_database(pg_server)


@pytest.fixture
async def empty_database(pg_server: LocalPostgres) -> str:
    return await create_empty_database(pg_server)


@pytest.fixture(scope="session", autouse=True)
def _renderers_closed() -> Iterator[None]:
    """Templates render in renderer processes, started on first use and closed with a
    tower's config store; tests that build specs without a store (unit tests, the worker
    contract) leave them to this, before the session's check for processes left running."""
    yield
    renderer.close()


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Runs after the session's fixtures are torn down: whatever is left, leaked."""
    leftovers = hygiene.leftovers(os.getpid())
    threads = hygiene.blocking_threads()
    say = session.config.get_terminal_writer().line
    if threads or leftovers:
        say()
    if threads:
        say(f"threads still running at the session's end: {', '.join(threads)}", yellow=True)
    if not leftovers:
        return
    for pid in leftovers:
        say(f"left running by the tests, now killed: {hygiene.command_line(pid)}", red=True)
    hygiene.kill_all(leftovers)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(trylast=True)
def pytest_unconfigure() -> None:
    hygiene.bound_the_exit()
