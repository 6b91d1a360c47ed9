"""A dead database answers 503 with Retry-After, never a 500 with a traceback, and the API
comes back by itself once PostgreSQL does: the load balancer fails over on 503."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from asyncpg.exceptions import _base as asyncpg_base
from fastapi import FastAPI

from tests.support.live import client_for, live_tower
from tower.db.embedded import LocalPostgres
from tower.settings import Settings
from tower.web.errors import install_error_handlers

API_KEY = "database-outage-test-key"
JOB = {"agent_id": "outage", "engine": "claude-code", "prompt": "sleep 3600"}
UNAVAILABLE = {"detail": "The database is unavailable; retry shortly"}


@pytest.fixture
async def private_server(tmp_path: Path) -> AsyncIterator[LocalPostgres]:
    # A PostgreSQL of this test's own, so stopping it troubles no other test.
    server = await asyncio.to_thread(LocalPostgres(tmp_path / "pgdata").start)
    yield server
    await asyncio.to_thread(server.stop, "immediate")


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) > 0
    assert response.json() == UNAVAILABLE


async def test_api_answers_503_while_database_is_down(
    private_server: LocalPostgres, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(
        database_url=private_server.url, tower_runner="simulated", tower_api_key=API_KEY
    )
    async with live_tower(settings) as url, client_for(url, API_KEY) as client:
        assert (await client.get("/jobs")).status_code == 200
        assert (await client.post("/jobs", json=JOB)).status_code == 202

        await asyncio.to_thread(private_server.stop, "immediate")
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            # Twice each: the first finds the pool's connections dead, the next cannot connect.
            down = [await client.get("/jobs") for _ in range(2)]
            down += [await client.post("/jobs", json=JOB) for _ in range(2)]
        request_records = [
            r for r in caplog.records if r.name in ("tower.web.errors", "uvicorn.error")
        ]

        await asyncio.to_thread(private_server.start)
        back_list = await client.get("/jobs")
        back_submit = await client.post("/jobs", json=JOB)

    for response in down:
        assert_unavailable(response)
    # One line per error, no traceback.
    assert len([r for r in request_records if r.name == "tower.web.errors"]) == len(down)
    assert all(r.exc_info is None and "\n" not in r.getMessage() for r in request_records)
    assert back_list.status_code == 200, back_list.text
    assert back_submit.status_code == 202, back_submit.text


async def test_a_stored_key_checked_while_the_database_is_down_is_a_503(
    private_server: LocalPostgres,
) -> None:
    """A stored key is looked up in PostgreSQL, by the request gate for a write (before
    the body is read) and by the route for a read: both answer 503, never a 500."""
    settings = Settings(
        database_url=private_server.url, tower_runner="simulated", tower_api_key=API_KEY
    )
    async with live_tower(settings) as url, client_for(url, API_KEY) as admin:
        body = {"tenant": "acme", "role": "submit", "name": "bot"}
        key = (await admin.post("/keys", json=body)).json()["key"]
        await asyncio.to_thread(private_server.stop, "immediate")
        async with client_for(url, key) as client:
            down = [await client.post("/jobs", json=JOB), await client.get("/jobs")]
        await asyncio.to_thread(private_server.start)
        async with client_for(url, key) as client:
            back = await client.post("/jobs", json=JOB)
    for response in down:
        assert_unavailable(response)
    assert back.status_code == 202, back.text


def raising(error: Exception) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise error

    return app


async def answer(error: Exception) -> httpx.Response:
    transport = httpx.ASGITransport(app=raising(error), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://tower") as client:
        return await client.get("/boom")


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connect call failed"),
        OSError("Multiple exceptions: ..."),
        TimeoutError(),
        asyncpg.CannotConnectNowError("the database system is shutting down"),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.InterfaceError("connection is closed"),
    ],
)
async def test_connection_errors_are_503(error: Exception) -> None:
    assert_unavailable(await answer(error))


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.UniqueViolationError("duplicate key value violates unique constraint"),
        asyncpg.DataError("invalid input syntax for type uuid"),
        asyncpg_base.DataError("invalid input for query argument $1"),
        asyncpg.UndefinedColumnError("column does not exist"),
    ],
)
async def test_statement_errors_are_not_an_outage(error: Exception) -> None:
    assert (await answer(error)).status_code == 500
