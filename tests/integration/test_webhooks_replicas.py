"""Webhooks and metrics across towers running as real processes on one database."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from standardwebhooks import Webhook

from tests.support.metrics import Samples, samples
from tests.support.receiver import HOLD, receiver
from tests.support.towers import TowerProcess, start_tower
from tower.webhooks.queries import UNANSWERED
from tower.webhooks.signing import new_secret

pytestmark = pytest.mark.slow

SECRET = new_secret()
WEBHOOKS = {
    "webhook_secret": SECRET,
    "webhook_allow_private": "true",
    "webhook_timeout": 1,
    "webhook_retry_base": 0.05,
    "webhook_retry_max": 0.2,
    "poll_interval": 0.5,
}
DEADLINE = 60.0


@asynccontextmanager
async def towers(
    database_url: str, workdir: Path, names: list[str]
) -> AsyncIterator[list[TowerProcess]]:
    async with AsyncExitStack() as stack:
        started = []
        for name in names:
            tower = await start_tower(database_url, workdir, name, **WEBHOOKS)
            stack.callback(_stop, tower)
            started.append(tower)
        yield started


def _stop(tower: TowerProcess) -> None:
    if tower.process.poll() is None:
        tower.terminate()


async def submit(base_url: str, prompt: str, webhook_url: str | None = None) -> str:
    body: dict[str, Any] = {"agent_id": "rep", "engine": "claude-code", "prompt": prompt}
    if webhook_url:
        body["webhook_url"] = webhook_url
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        response = await client.post("/jobs", json=body)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id


async def get_json(base_url: str, path: str, **params: Any) -> Any:
    async with httpx.AsyncClient(base_url=base_url, timeout=90) as client:
        response = await client.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def until(check: Any) -> Any:
    """Poll until `check()` returns something truthy; no event crosses processes."""
    async with asyncio.timeout(DEADLINE):
        while True:
            found = await check()
            if found:
                return found
            await asyncio.sleep(0.1)


# --- a tower killed mid-delivery --------------------------------------------------------


async def test_delivery_of_a_killed_tower_is_made_by_another(
    database_url: str, tmp_path: Path
) -> None:
    async with receiver([HOLD], then=200) as hooks:
        async with towers(database_url, tmp_path, ["first"]) as (first,):
            job_id = await submit(first.base_url, "print survive", hooks.url)
            (held,) = await hooks.wait_for(1)  # the first tower is mid-send, held open
            first.kill()
        async with towers(database_url, tmp_path, ["second"]) as (second,):
            _, delivered = await hooks.wait_for(2)

            async def settled() -> Any:
                job = await get_json(second.base_url, f"/jobs/{job_id}")
                (delivery,) = job["webhook_deliveries"]
                return delivery if delivery["status"] == "delivered" else None

            delivery = await until(settled)
    assert delivered.headers["webhook-id"] == held.headers["webhook-id"]
    Webhook(SECRET).verify(delivered.body, delivered.headers)
    assert delivered.body == held.body
    interrupted, made = delivery["attempts"]
    assert (interrupted["attempt"], interrupted["error"]) == (1, UNANSWERED)
    assert (made["attempt"], made["status_code"], made["error"]) == (2, 200, None)


# --- /metrics across two replicas -------------------------------------------------------

COUNTS_BY_STATUS = """
SELECT status, count(*) AS jobs,
       coalesce(sum((usage ->> 'input_tokens')::bigint), 0) AS input_tokens,
       coalesce(sum((usage ->> 'output_tokens')::bigint), 0) AS output_tokens,
       coalesce(sum((usage ->> 'cost_usd')::float8), 0) AS cost_usd,
       coalesce(sum(attempt), 0) AS claims
FROM jobs GROUP BY status
"""


async def scrape(tower: TowerProcess) -> Samples:
    async with httpx.AsyncClient(base_url=tower.base_url, timeout=30) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    return samples(response.text)


def total(scrapes: list[dict[Any, float]], name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return sum(scrape[key] for scrape in scrapes)


async def test_metrics_agree_with_the_database_across_two_replicas(
    database_url: str, tmp_path: Path
) -> None:
    async with receiver([], then=200) as hooks, towers(database_url, tmp_path, ["a", "b"]) as pair:
        submitted: list[str] = []
        for n in range(4):
            tower = pair[n % 2]
            usage = f"usage {100 + n} {10 + n} 0.25"
            submitted.append(await submit(tower.base_url, f"print ok\n{usage}", hooks.url))
            submitted.append(await submit(tower.base_url, f"{usage}\nexit 2"))
        for n in range(2):  # cancelled while running, through the other replica
            job_id = await submit(pair[n].base_url, "sleep 120")
            submitted.append(job_id)

            async def running(job_id: str = job_id, url: str = pair[n].base_url) -> bool:
                job = await get_json(url, f"/jobs/{job_id}")
                return bool(job["status"] == "running")

            await until(running)
            async with httpx.AsyncClient(base_url=pair[1 - n].base_url) as client:
                assert (await client.delete(f"/jobs/{job_id}")).status_code == 200
        for job_id in submitted:
            await get_json(pair[0].base_url, f"/jobs/{job_id}/wait", timeout=60)
        await hooks.wait_for(4)

        connection = await asyncpg.connect(database_url)
        try:

            async def deliveries_settled() -> bool:
                pending = await connection.fetchval(
                    "SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'"
                )
                return bool(pending == 0)

            await until(deliveries_settled)
            rows = await connection.fetch(COUNTS_BY_STATUS)
            delivered = await connection.fetchval(
                "SELECT count(*) FROM webhook_attempts WHERE status_code = 200"
            )
        finally:
            await connection.close()
        finished_in_db = sum(int(row["jobs"]) for row in rows)

        async def counted() -> list[dict[Any, float]] | None:
            # A replica counts a job just after its terminal write commits, so a waiter
            # can see the job finished an instant before the counter moves.
            scrapes = [await scrape(tower) for tower in pair]
            finished = sum(
                total(scrapes, "tower_jobs_finished_total", status=status)
                for status in ("completed", "failed", "cancelled")
            )
            return scrapes if finished >= finished_in_db else None

        scrapes = await until(counted)

    db: dict[str, dict[str, float]] = defaultdict(dict)
    for row in rows:
        db[row["status"]] = {k: float(v) for k, v in dict(row).items() if k != "status"}
    assert {status: db[status]["jobs"] for status in db} == {
        "completed": 4,
        "failed": 4,
        "cancelled": 2,
    }
    # Counters: each replica counts what it did; their sum is the whole.
    assert total(scrapes, "tower_jobs_submitted_total") == len(submitted)
    for status in ("completed", "failed", "cancelled"):
        assert total(scrapes, "tower_jobs_finished_total", status=status) == db[status]["jobs"]
    ran = db["completed"]["jobs"] + db["failed"]["jobs"]
    assert total(scrapes, "tower_job_run_duration_seconds_count", status="completed") == 4
    assert total(scrapes, "tower_job_run_duration_seconds_count", status="failed") == 4
    assert total(scrapes, "tower_claim_latency_seconds_count") == sum(
        db[status]["claims"] for status in db
    )
    ran_tokens = {k: sum(db[s][k] for s in ("completed", "failed")) for k in db["completed"]}
    assert total(scrapes, "tower_tokens_total", kind="input") == ran_tokens["input_tokens"]
    assert total(scrapes, "tower_tokens_total", kind="output") == ran_tokens["output_tokens"]
    assert total(scrapes, "tower_cost_usd_total") == pytest.approx(ran_tokens["cost_usd"])
    assert ran_tokens["input_tokens"] > 0 and ran == 8
    assert total(scrapes, "tower_webhook_attempts_total", outcome="delivered") == delivered == 4
    # Gauges: read from the database, the same on every replica.
    for scrape_ in scrapes:
        for status in ("completed", "failed", "cancelled", "pending", "running"):
            expected = db.get(status, {}).get("jobs", 0)
            assert scrape_[("tower_jobs", (("status", status),))] == expected
        assert scrape_[("tower_queue_depth", ())] == 0
        assert scrape_[("tower_webhook_deliveries", (("status", "delivered"),))] == 4
        assert scrape_[("tower_webhook_deliveries", (("status", "pending"),))] == 0
        assert scrape_[("tower_pool_ready", ())] == 0  # the simulated runner has no pool
