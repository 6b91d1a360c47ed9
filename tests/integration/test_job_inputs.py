"""A job's inputs (uploads unpacked into its workspace) through real HTTP on real PostgreSQL:
checked at submit, recorded with the job in its transaction, kept by retention while a
live job uses them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.support.live import client_for, live_tower
from tower.db.pool import Pool
from tower.execution.simulated import SimulatedRunner
from tower.queue.retention import Retention
from tower.settings import Settings

KEY = "job-inputs-test-key"
FOREVER = "sleep 3600"  # the simulated runner keeps such a job running
FILE = {"Content-Type": "application/octet-stream"}


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        database_url=database_url,
        tower_runner="simulated",
        tower_api_key=KEY,
        bundle_volume_size="1m",  # small, so two uploads can pass it
    )
    async with live_tower(settings, SimulatedRunner()) as url, client_for(url, KEY) as client:
        yield client


async def upload(client: httpx.AsyncClient, data: bytes = b"hello\n") -> str:
    response = await client.post("/uploads?filename=notes.txt", content=data, headers=FILE)
    assert response.status_code == 201, response.text
    upload_id: str = response.json()["upload_id"]
    return upload_id


def job(*inputs: dict[str, Any], prompt: str = FOREVER) -> dict[str, Any]:
    return {"agent_id": "tester", "engine": "claude-code", "prompt": prompt, "inputs": list(inputs)}


def first_error(response: httpx.Response) -> tuple[list[Any], str]:
    assert response.status_code == 422, response.text
    detail = response.json()["detail"][0]
    return detail["loc"], detail["msg"]


async def job_inputs(db: Any, job_id: str) -> list[tuple[int, str | None, str]]:
    rows = await db.fetch(
        "SELECT position, upload_id, path FROM job_inputs WHERE job_id = $1 ORDER BY position",
        job_id,
    )
    return [(row["position"], row["upload_id"], row["path"]) for row in rows]


async def test_a_job_records_its_inputs_in_order_and_echoes_them(
    client: httpx.AsyncClient, db: Any
) -> None:
    first, second = await upload(client), await upload(client)
    response = await client.post(
        "/jobs", json=job({"upload": first, "path": "src/./lib/"}, {"upload": second})
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]

    assert await job_inputs(db, job_id) == [(0, first, "src/lib"), (1, second, "")]
    record = (await client.get(f"/jobs/{job_id}")).json()
    assert record["inputs"] == [
        {"upload": first, "path": "src/lib"},
        {"upload": second, "path": ""},
    ]


async def test_an_unknown_upload_is_refused_naming_its_input(client: httpx.AsyncClient) -> None:
    known = await upload(client)
    unknown = "up-" + "0" * 24
    response = await client.post("/jobs", json=job({"upload": known}, {"upload": unknown}))
    assert first_error(response) == (["body", "inputs", 1, "upload"], "unknown or expired upload")


async def test_an_expired_upload_is_refused(client: httpx.AsyncClient, db: Any) -> None:
    expired = await upload(client)
    await db.execute("UPDATE uploads SET expires_at = now() WHERE upload_id = $1", expired)
    response = await client.post("/jobs", json=job({"upload": expired}))
    assert first_error(response) == (["body", "inputs", 0, "upload"], "unknown or expired upload")


@pytest.mark.parametrize("path", ["../up", "a/../../b", "/etc", "a\x00b"])
async def test_a_path_outside_the_workspace_is_refused(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.post("/jobs", json=job({"upload": await upload(client), "path": path}))
    loc, _ = first_error(response)
    assert loc[:4] == ["body", "inputs", 0, "path"]


async def test_inputs_larger_than_the_bundle_volume_are_refused(
    client: httpx.AsyncClient, db: Any
) -> None:
    big = [await upload(client, b"x" * 600_000) for _ in range(2)]
    response = await client.post("/jobs", json=job(*({"upload": one} for one in big)))
    loc, message = first_error(response)
    assert loc == ["body", "inputs"]
    assert "1200000 bytes" in message and "BUNDLE_VOLUME_SIZE" in message
    assert await db.fetchval("SELECT count(*) FROM job_inputs WHERE upload_id = ANY($1)", big) == 0


async def test_a_replayed_submit_records_its_inputs_once(
    client: httpx.AsyncClient, db: Any
) -> None:
    body = job({"upload": await upload(client), "path": "in"})
    headers = {"Idempotency-Key": "inputs-replay"}
    first = await client.post("/jobs", json=body, headers=headers)
    again = await client.post("/jobs", json=body, headers=headers)
    assert first.status_code == again.status_code == 202, (first.text, again.text)
    job_id = first.json()["job_id"]
    assert again.json()["job_id"] == job_id
    assert len(await job_inputs(db, job_id)) == 1
    # A replay is the original job's answer, even once its upload is gone.
    await client.delete(f"/uploads/{body['inputs'][0]['upload']}")
    late = await client.post("/jobs", json=body, headers=headers)
    assert (late.status_code, late.json()["job_id"]) == (202, job_id), late.text


async def test_concurrent_plain_submits_each_record_their_inputs(
    client: httpx.AsyncClient, db: Any
) -> None:
    ids = [await upload(client) for _ in range(3)]
    responses = await asyncio.gather(
        *(
            client.post("/jobs", json=job({"upload": one, "path": f"d{n}"}))
            for n, one in enumerate(ids)
        )
    )
    for n, response in enumerate(responses):
        assert response.status_code == 202, response.text
        assert await job_inputs(db, response.json()["job_id"]) == [(0, ids[n], f"d{n}")]


async def test_retention_keeps_an_expired_upload_while_a_live_job_uses_it(
    client: httpx.AsyncClient, db: Any, pool: Pool, database_url: str
) -> None:
    used, unused = await upload(client), await upload(client)
    response = await client.post("/jobs", json=job({"upload": used}))
    job_id = response.json()["job_id"]
    await db.execute(
        "UPDATE uploads SET expires_at = now() WHERE upload_id = ANY($1)", [used, unused]
    )
    retention = Retention(Settings(database_url=database_url), pool)

    await retention.clean_once()
    left = {row["upload_id"] for row in await db.fetch("SELECT upload_id FROM uploads")}
    assert used in left and unused not in left

    assert (await client.delete(f"/jobs/{job_id}")).status_code == 200
    await retention.clean_once()
    assert await db.fetchval("SELECT count(*) FROM uploads WHERE upload_id = $1", used) == 0
    # The finished job keeps its record; the input's upload is gone from it.
    assert await job_inputs(db, job_id) == [(0, None, "")]
