"""A tenant's quotas at submit, through real HTTP on real PostgreSQL: queue depth, spend
per day and month (429 naming the cap; a job's budget defaults to what remains), and
what GET /tenants/{name} says of its use. Submits per minute and the running quota across
two replicas: tests/integration/test_tenant_replicas.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from tests.support.live import client_for, live_tower
from tests.support.metrics import samples
from tower.execution.simulated import SimulatedRunner
from tower.settings import Settings

ADMIN_KEY = "quotas-bootstrap"
FOREVER = "sleep 3600"


@pytest.fixture
async def url(database_url: str) -> AsyncIterator[str]:
    settings = Settings(
        database_url=database_url, tower_runner="simulated", tower_api_key=ADMIN_KEY
    )
    async with live_tower(settings, SimulatedRunner()) as url:
        yield url


@pytest.fixture
async def admin(url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(url, ADMIN_KEY) as client:
        yield client


@pytest.fixture
async def acme(admin: httpx.AsyncClient, url: str) -> AsyncIterator[httpx.AsyncClient]:
    body = {"tenant": "acme", "role": "submit", "name": "acme-bot"}
    key = (await admin.post("/keys", json=body)).json()["key"]
    async with client_for(url, key) as client:
        yield client


def job(prompt: str, **fields: Any) -> dict[str, Any]:
    return {"agent_id": "quota", "engine": "claude-code", "prompt": prompt, **fields}


async def submitted(client: httpx.AsyncClient, prompt: str, **fields: Any) -> str:
    response = await client.post("/jobs", json=job(prompt, **fields))
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id


async def finished(client: httpx.AsyncClient, prompt: str, **fields: Any) -> dict[str, Any]:
    job_id = await submitted(client, prompt, **fields)
    response = await client.get(f"/jobs/{job_id}/wait", params={"timeout": 60})
    record: dict[str, Any] = response.json()
    assert record["status"] == "completed", record
    return record


async def running(client: httpx.AsyncClient, job_id: str) -> None:
    """Until the job runs: its events stream says so (no polling)."""
    async with client.stream("GET", f"/jobs/{job_id}/events") as response:
        async for line in response.aiter_lines():
            if '"status": "running"' in line or '"status":"running"' in line:
                return
    raise AssertionError(f"{job_id} never ran")


async def test_a_full_queue_refuses_a_submit(admin: httpx.AsyncClient, acme: Any) -> None:
    await admin.put("/tenants/acme", json={"max_running": 1, "max_queued": 2})
    await running(acme, await submitted(acme, FOREVER))
    await submitted(acme, FOREVER)
    await submitted(acme, FOREVER)  # two wait: the running quota holds them
    refused = await acme.post("/jobs", json=job(FOREVER))
    assert refused.status_code == 429
    assert "max_queued is 2" in refused.json()["detail"]
    assert int(refused.headers["Retry-After"]) > 0
    use = (await acme.get("/tenants/acme")).json()["use"]
    assert (use["running"], use["queued"]) == (1, 2)
    # Another tenant's queue is its own.
    assert (await admin.post("/jobs", json=job("print ok"))).status_code == 202

    scraped = await acme.get("/metrics")
    found = samples(scraped.text)
    refused = (("quota", "max_queued"), ("tenant", "acme"))
    assert found[("tower_tenant_submits_refused_total", refused)] == 1
    assert found[("tower_tenant_jobs_submitted_total", (("tenant", "acme"),))] == 3
    assert found[("tower_tenant_jobs", (("status", "running"), ("tenant", "acme")))] == 1
    assert found[("tower_tenant_jobs", (("status", "pending"), ("tenant", "acme")))] == 2
    assert "acme-bot" not in scraped.text  # tenants, never keys


async def test_a_spend_cap_bounds_each_jobs_budget_then_refuses(
    admin: httpx.AsyncClient, acme: Any
) -> None:
    await admin.put("/tenants/acme", json={"spend_per_day_usd": 1.0})
    first = await finished(acme, "usage 100 20 0.6")
    assert first["max_budget_usd"] == 1.0  # all of it remained
    second = await finished(acme, "print next")
    assert second["max_budget_usd"] == 0.4  # what remains of the day's dollar
    asked_less = await finished(acme, "usage 1 1 0.35", max_budget_usd=0.1)
    assert asked_less["max_budget_usd"] == 0.1
    asked_more = await finished(acme, "print more", max_budget_usd=5)
    assert asked_more["max_budget_usd"] == 0.05  # held to what remains

    await finished(acme, "usage 1 1 0.05")
    refused = await acme.post("/jobs", json=job("print over"))
    assert refused.status_code == 429
    assert "spend_per_day_usd is $1.00" in refused.json()["detail"]
    assert 0 < int(refused.headers["Retry-After"]) <= 86400

    found = samples((await acme.get("/metrics")).text)
    assert found[("tower_tenant_cost_usd_this_month", (("tenant", "acme"),))] == pytest.approx(1)
    tokens = ("tower_tenant_tokens_this_month", (("kind", "input"), ("tenant", "acme")))
    assert found[tokens] == 102
    spend = (("quota", "spend_per_day_usd"), ("tenant", "acme"))
    assert found[("tower_tenant_submits_refused_total", spend)] == 1

    use = (await acme.get("/tenants/acme")).json()["use"]
    assert use["spend_today_usd"] == pytest.approx(1.0)
    assert use["jobs_today"] == 5
    assert (use["input_tokens_this_month"], use["output_tokens_this_month"]) == (102, 22)
    # Raising the cap lets it submit again at once (the quota is set on every replica).
    await admin.put("/tenants/acme", json={"spend_per_day_usd": 2.0})
    assert (await finished(acme, "print again"))["max_budget_usd"] == 1.0


async def test_a_monthly_cap_counts_what_retention_rolled_up(
    admin: httpx.AsyncClient, acme: Any, database_url: str
) -> None:
    await admin.put("/tenants/acme", json={"spend_per_month_usd": 10.0})
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(
            "INSERT INTO tenant_usage VALUES ('acme', (now() AT TIME ZONE 'UTC')::date,"
            " 3, 0, 0, 9.5)"
        )
    finally:
        await connection.close()
    assert (await finished(acme, "usage 1 1 0.5"))["max_budget_usd"] == 0.5
    refused = await acme.post("/jobs", json=job("print over"))
    assert refused.status_code == 429
    assert "spend_per_month_usd is $10.00" in refused.json()["detail"]


async def test_a_tenant_without_quotas_is_not_counted(acme: Any, database_url: str) -> None:
    for _ in range(3):
        await submitted(acme, "print x")
    connection = await asyncpg.connect(database_url)
    try:
        assert await connection.fetchval("SELECT count(*) FROM tenant_rates") == 0
    finally:
        await connection.close()
