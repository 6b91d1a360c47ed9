"""A tower cut off from a database the other replicas still reach: its job goes to their
reaper, as when a tower dies, and what it writes once it is back is fenced off.

Real tower processes (the simulated runner); the cut one reaches PostgreSQL through a
TCP forwarder that the test cuts (tests/support/tcp_proxy.py), the other directly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.conditions import until
from tests.support.tcp_proxy import TcpForwarder, forwarding
from tests.support.towers import TowerProcess, connect, insert_job, start_tower
from tower.db.embedded import LocalPostgres
from tower.db.lifecycle import LOST_BY_LEASE

LEASE_SECONDS = 2
DEADLINE = 60.0  # a bound on waiting, never an expectation of speed


@pytest.fixture
async def proxy(pg_server: LocalPostgres) -> AsyncIterator[TcpForwarder]:
    async with forwarding("127.0.0.1", pg_server.port) as forwarder:
        yield forwarder


@pytest.fixture
async def towers(database_url: str, tmp_path: Path) -> AsyncIterator[list[TowerProcess]]:
    started: list[TowerProcess] = []
    yield started
    for tower in started:
        # Off the loop: the forwarder runs in it, and the cut tower stops through it.
        await asyncio.to_thread(tower.terminate)


async def test_a_cut_off_tower_loses_its_job_and_its_late_writes_are_fenced(
    database_url: str,
    pg_server: LocalPostgres,
    proxy: TcpForwarder,
    towers: list[TowerProcess],
    tmp_path: Path,
) -> None:
    settings: dict[str, float | str] = {"lease_seconds": LEASE_SECONDS, "poll_interval": 0.2}
    through_proxy = database_url.replace(f":{pg_server.port}/", f":{proxy.port}/")
    cut = await start_tower(through_proxy, tmp_path, "cut", **settings)
    towers.append(cut)
    db = await connect(database_url)
    try:
        job_id = await insert_job(db, "sleep 2\nprint late output", max_attempts=1)
        await _until_row(db, job_id, "status = 'running' AND lease_owner = 'cut'")
        proxy.cut()
        # Nothing else is queued: the other replica's part is its reaper's.
        towers.append(await start_tower(database_url, tmp_path, "other", **settings))
        await _until_row(db, job_id, "status = 'failed'")
        reaped = dict(await db.fetchrow("SELECT * FROM jobs WHERE job_id = $1", job_id))
        # The run went on while cut: it tried to store its output, and could not.
        await until(
            lambda: f"job {job_id}: storing its log failed" in cut.log(),
            "the cut tower's run to end",
            DEADLINE,
        )

        proxy.restore()
        await until(
            lambda: f"job {job_id}: result discarded; lease gone" in cut.log(),
            "the cut tower's finish, fenced off",
            DEADLINE,
        )
        after = dict(await db.fetchrow("SELECT * FROM jobs WHERE job_id = $1", job_id))
        events = await db.fetch("SELECT * FROM job_events WHERE job_id = $1", job_id)
    finally:
        await db.close()

    assert (reaped["failure_reason"], reaped["error"]) == ("tower_lost", LOST_BY_LEASE)
    assert after == reaped
    assert "late output" not in str([dict(event) for event in events])
    assert proxy.refused > 0  # the cut tower did try while it was cut off


async def _until_row(db: Any, job_id: str, condition: str) -> None:
    """Until the job's row meets `condition`: checked often, bounded by DEADLINE."""
    query = f"SELECT {condition} FROM jobs WHERE job_id = $1"
    ends = time.monotonic() + DEADLINE
    while True:
        if await db.fetchval(query, job_id):
            return
        assert time.monotonic() < ends, f"job {job_id}: still not {condition}"
        await asyncio.sleep(0.05)
