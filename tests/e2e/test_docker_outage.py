"""A Docker daemon that is down, goes away or loses the worker image: the tower claims
nothing meanwhile, /health says why, and everything queued runs once Docker is back,
without restarting the tower.

The daemon stopped and started here is a second engine of the test's own
(tests/support/second_docker.py), never the machine's shared one; the tower is a real
process pointed at it with DOCKER_HOST.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.support import describe, register_shell, submit, wait_terminal
from tests.support.second_docker import SecondDocker
from tests.support.towers import TowerProcess, start_tower

pytestmark = pytest.mark.slow

# The tag the tower runs, on the second engine only: untagging it is how the image
# "goes missing" without losing the copy (the worker image's other tag keeps it).
OUTAGE_TAG = "parpaing-worker:outage-test"
# How long "claims nothing" is watched: many claim rounds at POLL_INTERVAL 0.2 s.
QUIET_SECONDS = 3.0
JOBS = 3


@pytest.fixture
async def tower(
    engine: SecondDocker, database_url: str, tmp_path: Path
) -> AsyncIterator[TowerProcess]:
    """A tower on the second engine, started while that engine is down."""
    _tag(engine)
    engine.stop()
    started = await start_tower(
        database_url,
        tmp_path,
        "outage",
        tower_runner="docker",
        docker_host=engine.host,
        worker_image=OUTAGE_TAG,
        worker_net="parpaing-outage-test",
        gateway_socket_volume="parpaing-outage-test-socket",
        pool_size=0,
        poll_interval=0.2,
    )
    try:
        yield started
    finally:
        started.terminate()
        if not engine.running:
            engine.start()


async def test_docker_down_then_up_claims_nothing_meanwhile_then_runs_every_job(
    engine: SecondDocker, tower: TowerProcess
) -> None:
    async with httpx.AsyncClient(base_url=tower.base_url, timeout=60) as client:
        await register_shell(client)
        # Started before dockerd: degraded, saying why, and nothing claimed.
        assert "claiming no job until it does" in await _degraded(client)
        jobs = [await submit(client, f"echo job {n}") for n in range(JOBS)]
        await _stay_pending(client, jobs)

        engine.start()  # the tower is not restarted
        await _all_complete(client, jobs)
        assert (await client.get("/health")).status_code == 200

        # Seen going away: the same again.
        engine.stop()
        assert "claiming no job until it does" in await _degraded(client)
        later = [await submit(client, f"echo later {n}") for n in range(JOBS)]
        await _stay_pending(client, later)
        engine.start()
        await _all_complete(client, later)


async def test_missing_worker_image_claims_nothing_until_it_is_back(
    engine: SecondDocker, tower: TowerProcess
) -> None:
    engine.start()
    async with httpx.AsyncClient(base_url=tower.base_url, timeout=60) as client:
        await register_shell(client)
        await _all_complete(client, [await submit(client, "echo warm-up")])

        await asyncio.to_thread(_untag, engine)
        assert f"worker image {OUTAGE_TAG} is not present" in await _degraded(client)
        jobs = [await submit(client, f"echo job {n}") for n in range(JOBS)]
        await _stay_pending(client, jobs)

        await asyncio.to_thread(_tag, engine)
        await _all_complete(client, jobs)


# --- helpers ---------------------------------------------------------------------------


def _tag(engine: SecondDocker) -> None:
    with contextlib.closing(engine.client()) as client:
        images = client.images.list(name="parpaing-worker")
        assert images, "the worker image was not copied to the second engine"
        images[0].tag(OUTAGE_TAG)


def _untag(engine: SecondDocker) -> None:
    with contextlib.closing(engine.client()) as client:
        client.images.remove(OUTAGE_TAG)  # the other tag keeps the image itself


async def _degraded(client: httpx.AsyncClient, deadline: float = 30.0) -> str:
    """/health's Docker detail once it answers 503."""
    end = time.monotonic() + deadline
    while True:
        response = await client.get("/health")
        if response.status_code == 503:
            detail: str = response.json()["checks"]["docker"]
            return detail
        assert time.monotonic() < end, f"/health still healthy: {response.text}"
        await asyncio.sleep(0.1)


async def _stay_pending(client: httpx.AsyncClient, jobs: list[str]) -> None:
    """Every job is still pending, never attempted, all through QUIET_SECONDS."""
    end = time.monotonic() + QUIET_SECONDS
    while time.monotonic() < end:
        for job_id in jobs:
            record = await _record(client, job_id)
            assert (record["status"], record["attempt"]) == ("pending", 0), describe(record)
        await asyncio.sleep(0.2)


async def _all_complete(client: httpx.AsyncClient, jobs: list[str]) -> None:
    for job_id in jobs:
        record = await wait_terminal(client, job_id, deadline=90)
        assert record["status"] == "completed", describe(record)
        assert record["attempt"] == 1, describe(record)


async def _record(client: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    response = await client.get(f"/jobs/{job_id}")
    assert response.status_code == 200, response.text
    record: dict[str, Any] = response.json()
    return record
