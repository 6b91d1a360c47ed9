"""The jobs API through real HTTP on real PostgreSQL: submit, get, list, cancel, errors."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest

from tests.support.live import client_for, live_tower
from tower.execution.simulated import SimulatedRunner
from tower.jobs.queries import LIST_TEXT_LIMIT
from tower.settings import Settings

API_KEY = "jobs-api-test-key"
# Long enough that no job submitted here finishes while the test looks at it.
FOREVER = "sleep 3600"


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(database_url=database_url, tower_runner="simulated", tower_api_key=API_KEY)
    async with live_tower(settings, SimulatedRunner()) as url, client_for(url, API_KEY) as client:
        yield client


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url)
    yield connection
    await connection.close()


def job(**fields: object) -> dict[str, object]:
    return {"agent_id": "tester", "engine": "claude-code", "prompt": FOREVER, **fields}


async def submit(client: httpx.AsyncClient, **fields: object) -> str:
    response = await client.post("/jobs", json=job(**fields))
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id


def error_locs(response: httpx.Response) -> list[list[object]]:
    return [error["loc"] for error in response.json()["detail"]]


# --- submit and get -------------------------------------------------------------------


async def test_submit_returns_pending_job_id_of_the_agent(client: httpx.AsyncClient) -> None:
    response = await client.post("/jobs", json=job(agent_id="agent_7"))
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "pending"
    assert re.fullmatch(r"agent_7-[0-9a-f]{12}", body["job_id"])


async def test_get_echoes_the_request_without_the_prompt(client: httpx.AsyncClient) -> None:
    job_id = await submit(
        client,
        model="claude-opus-4",
        output_format="text",
        max_turns=7,
        max_budget_usd=1.5,
        dry_run=True,
        webhook_url="https://hooks.example.com/done",
        priority=5,
        max_attempts=3,
    )
    response = await client.get(f"/jobs/{job_id}")
    assert response.status_code == 200
    record = response.json()
    assert record["job_id"] == job_id
    assert record["status"] in ("pending", "running")
    assert (record["agent_id"], record["engine"], record["profile"]) == (
        "tester",
        "claude-code",
        "default",
    )
    assert record["model"] == "claude-opus-4"
    assert record["output_format"] == "text"
    assert (record["max_turns"], record["max_budget_usd"]) == (7, 1.5)
    assert record["dry_run"] is True
    assert record["webhook_url"] == "https://hooks.example.com/done"
    assert (record["priority"], record["max_attempts"]) == (5, 3)
    assert record["prompt_chars"] == len(FOREVER)
    assert "prompt" not in record
    created = datetime.fromisoformat(record["created_at"])
    assert abs(datetime.now(UTC) - created) < timedelta(minutes=5)


async def test_max_attempts_defaults_to_the_setting(database_url: str) -> None:
    settings = Settings(database_url=database_url, tower_runner="simulated", max_attempts=4)
    async with live_tower(settings, SimulatedRunner()) as url, client_for(url) as client:
        job_id = await submit(client)
        record = (await client.get(f"/jobs/{job_id}")).json()
    assert record["max_attempts"] == 4


async def test_large_prompt_is_stored_whole(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    prompt = FOREVER + "\n" + "é" * 3_000_000 + "end"
    job_id = await submit(client, prompt=prompt)
    stored = await db.fetchval("SELECT request ->> 'prompt' FROM jobs WHERE job_id = $1", job_id)
    assert stored == prompt
    record = (await client.get(f"/jobs/{job_id}")).json()
    assert record["prompt_chars"] == len(prompt)


async def test_submit_notifies_pending_in_its_transaction(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    heard: list[str] = []
    await db.add_listener("parpaing_job_pending", lambda *args: heard.append(args[3]))
    job_id = await submit(client)
    # The 202 is sent after the commit, and the notification with it; a round trip on
    # the listening connection delivers what PostgreSQL already queued for it.
    await db.execute("SELECT 1")
    assert job_id in heard


async def test_submit_with_unknown_profile_or_engine_names_the_field(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/jobs", json=job(profile="no-such-profile"))
    assert response.status_code == 422
    assert ["body", "profile"] in error_locs(response)
    response = await client.post("/jobs", json=job(engine="no-such-engine"))
    assert response.status_code == 422
    assert ["body", "engine"] in error_locs(response)


async def test_submit_rejections_name_the_field_over_http(client: httpx.AsyncClient) -> None:
    cases = {
        "agent_id": {"agent_id": "has space"},
        "max_turns": {"max_turns": 0},
        "priority": {"priority": 1001},
        "webhook_url": {"webhook_url": "http://169.254.169.254/latest/meta-data"},
        "promptt": {"promptt": "typo"},
    }
    for field, fields in cases.items():
        response = await client.post("/jobs", json=job(**fields))
        assert response.status_code == 422, field
        assert ["body", field] in error_locs(response), response.text


async def test_missing_required_fields_are_named(client: httpx.AsyncClient) -> None:
    response = await client.post("/jobs", json={"prompt": "hi"})
    assert response.status_code == 422
    # The engine is not required: a job without one runs its profile's.
    assert {tuple(loc) for loc in error_locs(response)} == {("body", "agent_id")}


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b'{"agent_id": "a", "engine": ', "application/json"),
        (b"agent_id=a&engine=claude-code", "application/x-www-form-urlencoded"),
        (b'{"agent_id": "a", "engine": "claude-code"}', "text/plain"),
        (b"[1, 2, 3]", "application/json"),
        (b"", "application/json"),
        (b'{"agent_id": "a", "engine": "claude-code", "prompt": "\\u0000"}', "application/json"),
        (b'{"agent_id": "a", "engine": "claude-code", "prompt": "\\ud800"}', "application/json"),
        (b'{"agent_id": "a", "engine": "claude-code", "max_budget_usd": NaN}', "application/json"),
        (
            b'{"agent_id": "a", "engine": "claude-code", "prompt_vars": {"x": 1e999}}',
            "application/json",
        ),
        (b"[" * 100_000 + b"]" * 100_000, "application/json"),
        (
            b'{"agent_id": "a", "engine": "claude-code", "prompt_vars": {"x": '
            + b"9" * 5000
            + b"}}",
            "application/json",
        ),
    ],
)
async def test_malformed_bodies_are_4xx_never_500(
    client: httpx.AsyncClient, content: bytes, content_type: str
) -> None:
    response = await client.post("/jobs", content=content, headers={"content-type": content_type})
    assert 400 <= response.status_code < 500, response.text


async def test_unknown_job_is_404_for_get_cancel_and_wait(client: httpx.AsyncClient) -> None:
    for job_id in ("tester-0123456789ab", "not a job id", "x%00y"):
        assert (await client.get(f"/jobs/{job_id}")).status_code == 404
        assert (await client.delete(f"/jobs/{job_id}")).status_code == 404
        assert (await client.get(f"/jobs/{job_id}/wait", params={"timeout": 1})).status_code == 404
    response = await client.get("/jobs/tester-0123456789ab")
    assert "tester-0123456789ab" in response.json()["detail"]


# --- cancel -----------------------------------------------------------------------------


async def test_cancel_live_job_then_409_on_second_cancel(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    job_id = await submit(client)
    response = await client.delete(f"/jobs/{job_id}")
    assert response.status_code == 200
    assert response.json() == {"job_id": job_id, "status": "cancelled"}
    row = await db.fetchrow("SELECT * FROM jobs WHERE job_id = $1", job_id)
    assert row["status"] == "cancelled"
    assert row["finished_at"] is not None
    assert (row["lease_owner"], row["lease_token"], row["lease_until"]) == (None, None, None)
    again = await client.delete(f"/jobs/{job_id}")
    assert again.status_code == 409
    assert again.json() == {"detail": "Job already cancelled"}


async def test_cancel_notifies_cancelled_and_finished(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    heard: list[tuple[str, str]] = []
    for channel in ("parpaing_job_cancelled", "parpaing_job_finished"):
        await db.add_listener(channel, lambda *args: heard.append((args[2], args[3])))
    job_id = await submit(client)
    assert (await client.delete(f"/jobs/{job_id}")).status_code == 200
    await db.execute("SELECT 1")
    assert ("parpaing_job_cancelled", job_id) in heard
    assert ("parpaing_job_finished", job_id) in heard


async def test_cancel_of_finished_job_is_409_naming_its_status(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    await seed(db, "done-000000000001", "done", "completed")
    response = await client.delete("/jobs/done-000000000001")
    assert response.status_code == 409
    assert response.json() == {"detail": "Job already completed"}
    assert await db.fetchval("SELECT status FROM jobs WHERE job_id = 'done-000000000001'") == (
        "completed"
    )


# --- list -------------------------------------------------------------------------------


async def seed(
    db: asyncpg.Connection,
    job_id: str,
    agent_id: str,
    status: str,
    age_seconds: int = 0,
    result: str | None = None,
) -> None:
    """A job row written directly, so its status is fixed for the test: a pending one
    becomes claimable only in a day, out of every dispatcher's reach."""
    await db.execute(
        """
        INSERT INTO jobs (job_id, agent_id, engine, profile, status, request, created_at,
                          run_after, result)
        VALUES ($1, $2, 'claude-code', 'default', $3, '{}'::jsonb,
                now() - make_interval(secs => $4), now() + interval '1 day', $5)
        """,
        job_id,
        agent_id,
        status,
        age_seconds,
        result,
    )


@pytest.fixture
async def seeded(db: asyncpg.Connection) -> list[str]:
    """Ten jobs, newest first: agents a/b alternate, statuses cycle through all five."""
    statuses = ["pending", "running", "completed", "failed", "cancelled"]
    ids = []
    for index in range(10):
        agent = "a" if index % 2 == 0 else "b"
        job_id = f"{agent}-{index:012x}"
        await seed(db, job_id, agent, statuses[index % 5], age_seconds=index * 10)
        ids.append(job_id)
    return ids


async def test_list_is_newest_first_with_total(
    client: httpx.AsyncClient, seeded: list[str]
) -> None:
    response = await client.get("/jobs")
    assert response.status_code == 200
    page = response.json()
    assert (page["total"], page["limit"], page["offset"]) == (10, 50, 0)
    assert [row["job_id"] for row in page["jobs"]] == seeded


async def test_list_pages_cover_every_job_once(
    client: httpx.AsyncClient, seeded: list[str]
) -> None:
    seen: list[str] = []
    for offset in range(0, 12, 3):
        page = (await client.get("/jobs", params={"limit": 3, "offset": offset})).json()
        assert page["total"] == 10
        assert (page["limit"], page["offset"]) == (3, offset)
        seen += [row["job_id"] for row in page["jobs"]]
    assert seen == seeded
    beyond = (await client.get("/jobs", params={"offset": 100})).json()
    assert (beyond["jobs"], beyond["total"]) == ([], 10)


async def test_list_filters_by_status_and_agent(
    client: httpx.AsyncClient, seeded: list[str]
) -> None:
    completed = (await client.get("/jobs", params={"status": "completed"})).json()
    assert [row["job_id"] for row in completed["jobs"]] == [seeded[2], seeded[7]]
    assert completed["total"] == 2
    agent_b = (await client.get("/jobs", params={"agent_id": "b"})).json()
    assert [row["job_id"] for row in agent_b["jobs"]] == seeded[1::2]
    assert agent_b["total"] == 5
    both = (await client.get("/jobs", params={"agent_id": "b", "status": "completed"})).json()
    assert [row["job_id"] for row in both["jobs"]] == [seeded[7]]
    assert both["total"] == 1


async def test_list_rows_are_light(client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    long_result = "r" * (LIST_TEXT_LIMIT + 10)
    await seed(db, "big-000000000001", "big", "completed", result=long_result)
    row = (await client.get("/jobs")).json()["jobs"][0]
    assert row["result"] == long_result[:LIST_TEXT_LIMIT]
    assert row["truncated"] is True
    assert "prompt" not in row
    full = (await client.get("/jobs/big-000000000001")).json()
    assert full["result"] == long_result


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 201}, "limit"),
        ({"offset": -1}, "offset"),
        ({"offset": 2**63}, "offset"),
        ({"status": "done"}, "status"),
        ({"agent_id": "bad id"}, "agent_id"),
    ],
)
async def test_list_rejects_bad_params_naming_them(
    client: httpx.AsyncClient, params: dict[str, object], field: str
) -> None:
    response = await client.get("/jobs", params=params)
    assert response.status_code == 422
    assert ["query", field] in error_locs(response)
