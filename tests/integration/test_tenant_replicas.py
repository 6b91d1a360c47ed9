"""Tenants across two tower replicas (real processes on one database): a key revoked on
one is refused by the other within a second."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest

from tests.support.towers import TowerProcess, start_tower

pytestmark = pytest.mark.slow

ADMIN_KEY = "tenant-replicas-bootstrap"
REVOKE_BOUND = 1.0  # seconds: the bound, not an expectation of speed


@pytest.fixture
async def towers(database_url: str, tmp_path: Path) -> AsyncIterator[list[TowerProcess]]:
    async with AsyncExitStack() as stack:
        started = []
        for name in ("tower-a", "tower-b"):
            tower = await start_tower(database_url, tmp_path, name, tower_api_key=ADMIN_KEY)
            stack.callback(tower.terminate)
            started.append(tower)
        yield started


def client(tower: TowerProcess, key: str) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.AsyncClient(base_url=tower.base_url, headers=headers, timeout=10)


async def test_a_revoked_key_is_refused_by_the_other_replica_within_a_second(
    towers: list[TowerProcess],
) -> None:
    a, b = towers
    async with client(a, ADMIN_KEY) as admin:
        made = (
            await admin.post("/keys", json={"tenant": "acme", "role": "read", "name": "reader"})
        ).json()
        async with client(b, made["key"]) as reader:
            # B knows the key now (and keeps it in its cache).
            assert (await reader.get("/jobs")).status_code == 200
            assert (await reader.get("/jobs")).status_code == 200
            assert (await admin.delete(f"/keys/{made['id']}")).status_code == 204
            revoked = time.monotonic()
            while (status := (await reader.get("/jobs")).status_code) == 200:
                assert time.monotonic() - revoked < REVOKE_BOUND, "B still takes the key"
            elapsed = time.monotonic() - revoked
    assert status == 401
    assert elapsed < REVOKE_BOUND
