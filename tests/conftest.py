from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.postgres import create_database, start_server
from tower.db.embedded import LocalPostgres


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPostgres]:
    server = start_server(Path(tmp_path_factory.mktemp("postgres")))
    yield server
    server.stop(mode="immediate")


@pytest.fixture
async def database_url(pg_server: LocalPostgres) -> str:
    return await create_database(pg_server)
