"""/credentials through real HTTP against a real tower and its PostgreSQL: a secret goes
in, is stored sealed, and never comes out of the API."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.support.cli import parpaing
from tests.support.live import client_for, live_tower
from tower.credentials import service
from tower.db.pool import Pool
from tower.errors import Conflict
from tower.settings import Settings, new_secrets_key

KEY = "credentials-test-key"
SECRET = "ghp_credential-secret-4d1c9a"
SECRETS_KEY = new_secrets_key()


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        database_url=database_url,
        tower_runner="simulated",
        tower_api_key=KEY,
        secrets_key=SECRETS_KEY,
    )
    async with live_tower(settings) as url, client_for(url, KEY) as client:
        yield client


def github(name: str = "deploy", **extra: Any) -> dict[str, Any]:
    return {"name": name, "kind": "github", "secret": SECRET, **extra}


async def test_a_secret_goes_in_and_only_metadata_comes_out(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    created = await client.post("/credentials", json=github(username="bot"))
    listed = await client.get("/credentials")
    one = await client.get("/credentials/deploy")
    assert created.status_code == 201, created.text
    assert created.json()["api_url"] == "https://api.github.com"
    assert created.json()["username"] == "bot"
    assert [entry["name"] for entry in listed.json()["credentials"]] == ["deploy"]
    assert one.json() == created.json()
    metrics = await client.get("/metrics")
    for text in (created.text, listed.text, one.text, metrics.text, caplog.text):
        assert SECRET not in text


async def test_the_database_holds_the_secret_sealed(client: httpx.AsyncClient, pool: Pool) -> None:
    await client.post("/credentials", json=github())
    async with pool.acquire() as connection:
        row = await connection.fetchrow("SELECT * FROM credentials WHERE name = 'deploy'")
    assert SECRET.encode() not in bytes(row["sealed"])
    assert SECRET not in repr(dict(row))
    revealed = await service.reveal(pool, SECRETS_KEY, "deploy", "default")
    assert revealed.secret == SECRET
    assert SECRET not in repr(revealed)


async def test_another_key_cannot_open_it_and_says_why(
    client: httpx.AsyncClient, pool: Pool
) -> None:
    await client.post("/credentials", json=github())
    with pytest.raises(Conflict, match="another SECRETS_KEY"):
        await service.reveal(pool, new_secrets_key(), "deploy", "default")


async def test_a_sealed_secret_moved_to_another_name_does_not_open(
    client: httpx.AsyncClient, pool: Pool
) -> None:
    await client.post("/credentials", json=github("first"))
    await client.post("/credentials", json=github("second", secret="other-secret"))
    async with pool.acquire() as connection:
        await connection.execute(
            "UPDATE credentials SET sealed = (SELECT sealed FROM credentials WHERE name = 'first')"
            " WHERE name = 'second'"
        )
    with pytest.raises(Conflict, match="does not decrypt"):
        await service.reveal(pool, SECRETS_KEY, "second", "default")


async def test_names_are_unique_and_deletion_is_final(client: httpx.AsyncClient) -> None:
    assert (await client.post("/credentials", json=github())).status_code == 201
    again = await client.post("/credentials", json=github())
    assert again.status_code == 409
    assert "already exists" in again.json()["detail"]
    assert (await client.delete("/credentials/deploy")).status_code == 204
    assert (await client.get("/credentials/deploy")).status_code == 404
    assert (await client.delete("/credentials/deploy")).status_code == 404


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"kind": "svn"}, "kind"),
        ({"name": "no/slash"}, "name"),
        ({"secret": ""}, "secret"),
        ({"secret": "line\nbreak"}, "secret"),
        ({"secret": "x" * (16 * 1024 + 1)}, "secret"),
        ({"username": "bad\x00name"}, "username"),
        ({"api_url": "ftp://forge.example"}, "api_url"),
        ({"api_url": "https://user:pw@forge.example"}, "api_url"),
        ({"extra": 1}, "extra"),
    ],
)
async def test_bad_input_is_a_422_naming_the_field(
    client: httpx.AsyncClient, change: dict[str, Any], field: str
) -> None:
    response = await client.post("/credentials", json=github() | change)
    assert response.status_code == 422, response.text
    assert field in str(response.json()["detail"])
    assert SECRET not in response.text


async def test_every_route_needs_the_key(client: httpx.AsyncClient) -> None:
    anonymous = httpx.AsyncClient(base_url=str(client.base_url))
    async with anonymous:
        for method, path in (("GET", "/credentials"), ("GET", "/credentials/x")):
            assert (await anonymous.request(method, path)).status_code == 401
        assert (await anonymous.delete("/credentials/x")).status_code == 401
        assert (await anonymous.post("/credentials", json=github())).status_code == 401


async def test_without_secrets_key_storing_is_refused_naming_the_setting(
    database_url: str,
) -> None:
    settings = Settings(database_url=database_url, tower_runner="simulated", tower_api_key=KEY)
    async with live_tower(settings) as url, client_for(url, KEY) as client:
        response = await client.post("/credentials", json=github())
    assert response.status_code == 409
    assert "SECRETS_KEY" in response.json()["detail"]


async def run_cli(url: str, *args: str, stdin: bytes = b"") -> tuple[int, str, str]:
    ran = await parpaing(url, *args, api_key=KEY, stdin=stdin)
    return ran.code, ran.stdout, ran.stderr


async def test_the_cli_reads_the_secret_from_stdin_never_from_argv(
    client: httpx.AsyncClient, pool: Pool
) -> None:
    url = str(client.base_url)
    added = await run_cli(
        url,
        "credentials",
        "add",
        "ci",
        "--kind",
        "git",
        "--username",
        "bot",
        stdin=SECRET.encode() + b"\n",
    )
    listed = await run_cli(url, "credentials", "list")
    assert added[0] == 0, added
    assert (await service.reveal(pool, SECRETS_KEY, "ci", "default")).secret == SECRET
    assert listed[0] == 0 and "ci" in listed[1] and "bot" in listed[1]
    assert SECRET not in listed[1] + added[1] + added[2]
    empty = await run_cli(url, "credentials", "add", "none", "--kind", "git")
    assert empty[0] == 1 and "no secret on stdin" in empty[2]
    deleted = await run_cli(url, "credentials", "delete", "ci")
    assert deleted[0] == 0
    missing = await run_cli(url, "credentials", "delete", "ci")
    assert missing[0] == 1 and "404" in missing[2]
