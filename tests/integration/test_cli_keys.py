"""`parpaing keys` and `parpaing tenants`, as real processes against a real tower."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from tests.support.cli import Ran
from tests.support.cli import parpaing as run_parpaing
from tests.support.live import live_tower
from tower.settings import Settings

API_KEY = "cli-keys-bootstrap"


@pytest.fixture
async def tower(database_url: str) -> AsyncIterator[str]:
    settings = Settings(database_url=database_url, tower_runner="simulated", tower_api_key=API_KEY)
    async with live_tower(settings) as url:
        yield url


async def parpaing(url: str, *args: str, api_key: str = API_KEY) -> Ran:
    return await run_parpaing(url, *args, api_key=api_key)


async def test_a_key_made_listed_used_and_revoked(tower: str) -> None:
    made = await parpaing(tower, "keys", "create", "--tenant", "acme", "--role", "read",
                          "--name", "reader")  # fmt: skip
    assert made.code == 0, made.stderr
    key = made.stdout.splitlines()[0]
    assert key.startswith("ppk_")
    assert "not shown again" in made.stderr
    key_id = made.stderr.split()[1].rstrip(",")

    listed = await parpaing(tower, "keys", "list", "--tenant", "acme")
    assert listed.code == 0, listed.stderr
    assert key_id in listed.stdout and "reader" in listed.stdout
    assert key not in listed.stdout

    assert (await parpaing(tower, "tenants", "show", api_key=key)).code == 0
    revoked = await parpaing(tower, "keys", "revoke", key_id)
    assert revoked.code == 0, revoked.stderr
    refused = await parpaing(tower, "tenants", "show", api_key=key)
    assert refused.code == 1
    assert "HTTP 401" in refused.stderr


async def test_tenants_set_changes_only_the_quotas_given(tower: str) -> None:
    first = await parpaing(tower, "tenants", "set", "acme", "--max-running", "3",
                           "--spend-per-day-usd", "2.5")  # fmt: skip
    assert first.code == 0, first.stderr
    second = await parpaing(tower, "tenants", "set", "acme", "--max-queued", "100",
                            "--max-running", "default")  # fmt: skip
    assert second.code == 0, second.stderr
    shown = await parpaing(tower, "tenants", "show", "acme")
    quotas = json.loads(shown.stdout)["quotas"]
    assert quotas["max_running"] is None
    assert (quotas["spend_per_day_usd"], quotas["max_queued"]) == (2.5, 100)

    bad = await parpaing(tower, "tenants", "set", "acme", "--share", "lots")
    assert bad.code == 1 and "--share takes a number" in bad.stderr
    every = json.loads((await parpaing(tower, "tenants", "show")).stdout)
    assert [tenant["name"] for tenant in every["tenants"]] == ["acme", "default"]


async def test_a_read_key_cannot_make_keys(tower: str) -> None:
    made = await parpaing(tower, "keys", "create", "--tenant", "acme", "--role", "read",
                          "--name", "reader")  # fmt: skip
    key = made.stdout.splitlines()[0]
    refused = await parpaing(tower, "keys", "create", "--tenant", "acme", "--role", "admin",
                             "--name", "root", api_key=key)  # fmt: skip
    assert refused.code == 1
    assert "HTTP 403" in refused.stderr
