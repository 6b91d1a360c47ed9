"""API keys and tenants through real HTTP on real PostgreSQL: made once, stored as a hash,
listed without secrets, roles enforced, revoked for good; a tenant's quotas set and read."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from tests.support.live import client_for, live_tower
from tests.support.metrics import until_open_streams
from tower.execution.simulated import SimulatedRunner
from tower.settings import Settings

ADMIN_KEY = "tenant-keys-bootstrap"
JOB = {"agent_id": "tester", "engine": "claude-code", "prompt": "sleep 3600"}
CONFIG = "/configs/profile/tenant-test"


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


async def make_key(admin: httpx.AsyncClient, tenant: str, role: str, name: str) -> dict[str, str]:
    response = await admin.post("/keys", json={"tenant": tenant, "role": role, "name": name})
    assert response.status_code == 201, response.text
    made: dict[str, str] = response.json()
    return made


async def test_a_key_is_shown_once_and_stored_as_its_hash(
    admin: httpx.AsyncClient, database_url: str
) -> None:
    made = await make_key(admin, "acme", "submit", "ci-bot")
    assert made["key"].startswith("ppk_") and len(made["key"]) == 47
    assert (made["tenant"], made["role"], made["name"]) == ("acme", "submit", "ci-bot")
    assert made["key"].startswith(made["hint"].rstrip("…"))

    listed = (await admin.get("/keys")).json()["keys"]
    assert [key["id"] for key in listed] == [made["id"]]
    assert "key" not in listed[0]
    assert made["key"] not in (await admin.get("/keys")).text

    connection = await asyncpg.connect(database_url)
    try:
        stored = await connection.fetchrow("SELECT * FROM api_keys")
        dump = " ".join(str(value) for value in stored.values())
    finally:
        await connection.close()
    assert made["key"] not in dump
    assert stored["key_sha256"] == hashlib.sha256(made["key"].encode()).hexdigest()


async def test_a_name_is_taken_once_per_tenant(admin: httpx.AsyncClient) -> None:
    await make_key(admin, "acme", "read", "dashboard")
    again = await admin.post("/keys", json={"tenant": "acme", "role": "read", "name": "dashboard"})
    assert again.status_code == 409
    await make_key(admin, "globex", "read", "dashboard")


@pytest.mark.parametrize(
    "body",
    [
        {"tenant": "acme", "role": "root", "name": "x"},
        {"tenant": "a b", "role": "read", "name": "x"},
        {"tenant": "acme", "role": "read", "name": "x" * 65},
        {"tenant": "acme", "role": "read"},
        {"tenant": "acme", "role": "read", "name": "x", "key": "mine"},
    ],
)
async def test_a_bad_key_request_is_a_422(admin: httpx.AsyncClient, body: dict[str, str]) -> None:
    assert (await admin.post("/keys", json=body)).status_code == 422


async def test_a_stored_key_opens_its_tenant_and_a_revoked_one_nothing(
    admin: httpx.AsyncClient, url: str
) -> None:
    made = await make_key(admin, "acme", "submit", "worker")
    async with client_for(url, made["key"]) as client:
        assert (await client.post("/jobs", json=JOB)).status_code == 202
        assert (await admin.delete(f"/keys/{made['id']}")).status_code == 204
        refused = await client.get("/jobs")
        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"] == "Bearer"
        assert (await client.post("/jobs", json=JOB)).status_code == 401
    assert (await admin.delete(f"/keys/{made['id']}")).status_code == 404
    assert (await admin.delete("/keys/not-a-key")).status_code == 404


async def test_a_made_up_key_is_refused(url: str) -> None:
    fake = "ppk_" + "A" * 43
    for key in (fake, fake[:-1], "ppk_", ADMIN_KEY + "x"):
        async with client_for(url, key) as client:
            assert (await client.get("/jobs")).status_code == 401


async def test_only_admin_keys_manage_keys_and_tenants(admin: httpx.AsyncClient, url: str) -> None:
    for role in ("operator", "submit", "read"):
        made = await make_key(admin, "acme", role, f"k-{role}")
        async with client_for(url, made["key"]) as client:
            body = {"tenant": "acme", "role": "admin", "name": "escalate"}
            statuses = [
                (await client.post("/keys", json=body)).status_code,
                (await client.get("/keys")).status_code,
                (await client.delete(f"/keys/{made['id']}")).status_code,
                (await client.put("/tenants/acme", json={"max_running": 1})).status_code,
            ]
        assert statuses == [403, 403, 403, 403], role


async def test_roles_decide_what_a_key_may_write(admin: httpx.AsyncClient, url: str) -> None:
    profile = {"content": 'engine = "claude-code"\n'}
    reader = await make_key(admin, "acme", "read", "reader")
    submitter = await make_key(admin, "acme", "submit", "submitter")
    operator = await make_key(admin, "acme", "operator", "operator")
    async with client_for(url, reader["key"]) as client:
        # Refused at the gate: a read key writes nothing, whatever the body.
        refused = await client.post("/jobs", json=JOB)
        assert refused.status_code == 403
        assert (await client.get("/jobs")).status_code == 200
    async with client_for(url, submitter["key"]) as client:
        assert (await client.post("/jobs", json=JOB)).status_code == 202
        assert (await client.put(CONFIG, json=profile)).status_code == 403
    async with client_for(url, operator["key"]) as client:
        assert (await client.put(CONFIG, json=profile)).status_code in (200, 201)
        assert (await client.delete(CONFIG)).status_code == 204
        assert (await client.post("/jobs", json=JOB)).status_code == 403
        assert (await client.get("/jobs")).status_code == 200


async def test_a_tenants_quotas_are_set_and_read(admin: httpx.AsyncClient, url: str) -> None:
    quotas = {"max_running": 3, "submits_per_minute": 60, "spend_per_day_usd": 12.5}
    answer = await admin.put("/tenants/acme", json=quotas)
    assert answer.status_code == 200, answer.text
    tenant = answer.json()
    assert tenant["name"] == "acme"
    assert tenant["quotas"] == quotas | {
        "spend_per_month_usd": None,
        "max_queued": None,
        "share": None,
    }
    # Defaults fill in what the tenant does not set: 0 (no limit), share 1.
    assert tenant["effective"] == quotas | {
        "spend_per_month_usd": 0.0,
        "max_queued": 0,
        "share": 1.0,
    }
    assert (await admin.get("/tenants/acme")).json()["quotas"] == tenant["quotas"]
    names = [entry["name"] for entry in (await admin.get("/tenants")).json()["tenants"]]
    assert names == ["acme", "default"]

    assert (await admin.put("/tenants/acme", json={"max_running": -1})).status_code == 422
    assert (await admin.put("/tenants/acme", json={"share": 0})).status_code == 422
    assert (await admin.put("/tenants/a%20b", json={})).status_code == 404
    assert (await admin.get("/tenants/nobody")).status_code == 404


async def test_a_tenant_key_sees_its_own_tenant_only(admin: httpx.AsyncClient, url: str) -> None:
    await admin.put("/tenants/acme", json={"max_running": 3})
    globex = await make_key(admin, "globex", "read", "reader")
    acme = await make_key(admin, "acme", "read", "reader")
    async with client_for(url, globex["key"]) as client:
        assert (await client.get("/tenants/acme")).status_code == 404
        assert (await client.get("/tenants/globex")).status_code == 200
        listed = (await client.get("/tenants")).json()["tenants"]
        assert [entry["name"] for entry in listed] == ["globex"]
    async with client_for(url, acme["key"]) as client:
        assert (await client.get("/tenants/acme")).json()["effective"]["max_running"] == 3


async def test_a_keyless_tower_takes_no_key_but_refuses_a_wrong_one(database_url: str) -> None:
    settings = Settings(database_url=database_url, tower_runner="simulated")
    async with live_tower(settings, SimulatedRunner()) as url, client_for(url) as client:
        assert (await client.get("/jobs")).status_code == 200
        made = await make_key(client, "acme", "read", "reader")
        headers = {"Authorization": f"Bearer {made['key']}"}
        assert (await client.get("/jobs", headers=headers)).status_code == 200
        assert (await client.post("/jobs", json=JOB, headers=headers)).status_code == 403
        wrong = {"Authorization": "Bearer ppk_" + "B" * 43}
        assert (await client.get("/jobs", headers=wrong)).status_code == 401


async def test_a_revoked_key_keeps_no_stream_or_long_poll_open(
    admin: httpx.AsyncClient, url: str
) -> None:
    made = await make_key(admin, "acme", "submit", "watcher")
    async with client_for(url, made["key"]) as client:
        job_id = (await client.post("/jobs", json=JOB)).json()["job_id"]  # runs for an hour
        async with client.stream("GET", "/events", params={"last_event_id": 0}) as events:
            assert events.status_code == 200
            lines = events.aiter_lines()
            while "data:" not in await anext(lines):
                pass  # the stream is open and sending
            waiting = asyncio.ensure_future(client.get(f"/jobs/{job_id}/wait?timeout=600"))
            await until_open_streams(admin, {"wait": 1, "events": 1})
            assert (await admin.delete(f"/keys/{made['id']}")).status_code == 204
            # Both end at once: the stream without another event, the poll with 401.
            async with asyncio.timeout(10):
                async for _ in lines:
                    pass
                refused = await waiting
    assert refused.status_code == 401
    assert refused.json() == {"detail": "The API key was revoked"}
    await until_open_streams(admin, {"wait": 0, "events": 0})  # their slots given back
