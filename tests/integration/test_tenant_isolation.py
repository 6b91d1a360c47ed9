"""The isolation matrix: every route and stream of the API, asked by tenant B's key about
tenant A's resources, answers 404 (or leaves A's out of a listing), while A's own key gets
its answer; a `read` key writes nothing; a `submit` key touches no config, key or quota.

The routes come from the app's OpenAPI document: a route added without a line here fails
`test_every_route_has_an_isolation_check`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest

from tests.support.live import client_for, live_tower
from tower.app import create_app
from tower.execution.simulated import SimulatedRunner
from tower.settings import Settings

ADMIN_KEY = "isolation-bootstrap"
SECRETS_KEY = "x" * 43 + "="  # 32 bytes of URL-safe base64
FOREVER = "sleep 3600"
HOOK = "https://hooks.invalid/done"
WRITES = ("post", "put", "patch", "delete")


@dataclass
class World:
    """Tenant A's resources, B's own job, and a client per key."""

    a: httpx.AsyncClient  # tenant A, submit
    b: httpx.AsyncClient  # tenant B, submit
    b_read: httpx.AsyncClient  # tenant B, read
    admin: httpx.AsyncClient
    done: str  # A's completed job, with a webhook, artifacts and session state
    pending: str  # A's job that waits for an hour
    upload: str  # A's upload
    b_job: str  # B's completed job, submitted after all of A's


Check = Callable[[World], Awaitable[None]]


async def expect(client: httpx.AsyncClient, method: str, url: str, status: int, **kw: Any) -> Any:
    response = await client.request(method, url, **kw)
    assert response.status_code == status, (method, url, response.status_code, response.text)
    return (
        response.json()
        if response.content and "json" in response.headers.get("content-type", "")
        else None
    )


async def stream_status(client: httpx.AsyncClient, url: str, **params: Any) -> int:
    async with client.stream("GET", url, params=params) as response:
        return response.status_code


def job(**fields: Any) -> dict[str, Any]:
    return {"agent_id": "iso", "engine": "claude-code", "prompt": "print hi", **fields}


# --- one check per route: B's key on A's resource, A's key for contrast -------------------


async def submit(w: World) -> None:
    # B cannot build on A's upload or credential: unknown to it, as if they never were.
    inputs = [{"upload": w.upload, "path": "in.txt"}]
    await expect(w.b, "POST", "/jobs", 422, json=job(inputs=inputs))
    repo = {"url": "https://git.example.com/r.git", "credential": "deploy"}
    await expect(w.b, "POST", "/jobs", 422, json=job(repo=repo, prompt=FOREVER, dry_run=True))
    await expect(w.a, "POST", "/jobs", 202, json=job(inputs=inputs, prompt=FOREVER))


async def list_jobs(w: World) -> None:
    seen = {j["job_id"] for j in (await expect(w.b, "GET", "/jobs", 200))["jobs"]}
    assert w.done not in seen and w.pending not in seen and w.b_job in seen
    other = await expect(w.b, "GET", "/jobs", 200, params={"tenant": "tenant-a"})
    assert other["total"] == 0
    mine = {j["job_id"] for j in (await expect(w.a, "GET", "/jobs", 200))["jobs"]}
    assert {w.done, w.pending} <= mine and w.b_job not in mine
    everything = {j["job_id"] for j in (await expect(w.admin, "GET", "/jobs", 200))["jobs"]}
    assert {w.done, w.pending, w.b_job} <= everything


async def get_job(w: World) -> None:
    await expect(w.b, "GET", f"/jobs/{w.done}", 404)
    record = await expect(w.a, "GET", f"/jobs/{w.done}", 200)
    assert (record["tenant"], record["submitted_by"]) == ("tenant-a", "a-bot")


async def cancel_job(w: World) -> None:
    await expect(w.b, "DELETE", f"/jobs/{w.pending}", 404)
    status = (await expect(w.a, "GET", f"/jobs/{w.pending}", 200))["status"]
    assert status in ("pending", "running")  # not cancelled


async def wait_job(w: World) -> None:
    await expect(w.b, "GET", f"/jobs/{w.done}/wait", 404, params={"timeout": 1})
    await expect(w.a, "GET", f"/jobs/{w.done}/wait", 200, params={"timeout": 1})


async def continue_job(w: World) -> None:
    await expect(w.b, "POST", f"/jobs/{w.done}/continue", 404, json={"prompt": "print b"})
    await expect(w.a, "POST", f"/jobs/{w.done}/continue", 202, json={"prompt": "print a"})


async def get_session(w: World) -> None:
    await expect(w.b, "GET", f"/sessions/{w.done}", 404)
    await expect(w.a, "GET", f"/sessions/{w.done}", 200)


async def redeliver(w: World) -> None:
    await expect(w.b, "POST", f"/jobs/{w.done}/webhook/redeliver", 404)
    await expect(w.a, "POST", f"/jobs/{w.done}/webhook/redeliver", 202)


async def job_events(w: World) -> None:
    assert await stream_status(w.b, f"/jobs/{w.done}/events") == 404
    assert await stream_status(w.a, f"/jobs/{w.done}/events") == 200


async def all_events(w: World) -> None:
    """B's stream of every job's state, replayed from the start, up to B's own job's
    last event (after all of A's): none of A's jobs appear."""
    seen: set[str] = set()
    async with w.b.stream("GET", "/events", params={"last_event_id": 0}) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                event = json.loads(line[5:])
                seen.add(event["job_id"])
                if event["job_id"] == w.b_job and event["status"] == "completed":
                    break
    assert seen == {w.b_job}


async def profiles(w: World) -> None:
    await expect(w.b_read, "GET", "/profiles", 200)  # configs are nobody's


async def engines(w: World) -> None:
    await expect(w.b_read, "GET", "/engines", 200)


async def configs(w: World) -> None:
    await expect(w.b_read, "GET", "/configs/profile", 200)


async def config(w: World) -> None:
    await expect(w.b_read, "GET", "/configs/profile/default", 200)


async def config_write(w: World) -> None:
    body = {"content": 'engine = "claude-code"\n'}
    for method in ("POST", "PUT"):
        await expect(w.b, method, "/configs/profile/iso", 403, json=body)
    await expect(w.b, "DELETE", "/configs/profile/default", 403)


async def list_credentials(w: World) -> None:
    assert (await expect(w.b, "GET", "/credentials", 200))["credentials"] == []
    await expect(w.b, "GET", "/credentials", 404, params={"tenant": "tenant-a"})
    names = [c["name"] for c in (await expect(w.a, "GET", "/credentials", 200))["credentials"]]
    assert names == ["deploy"]


async def create_credential(w: World) -> None:
    # Names are per tenant: B's own "deploy" is another credential than A's.
    body = {"name": "deploy", "kind": "git", "secret": "b-token"}
    await expect(w.b, "POST", "/credentials", 404, params={"tenant": "tenant-a"}, json=body)
    await expect(w.b, "POST", "/credentials", 201, json=body)
    await expect(w.b, "DELETE", "/credentials/deploy", 204)


async def credential(w: World) -> None:
    await expect(w.b, "GET", "/credentials/deploy", 404)
    await expect(w.b, "GET", "/credentials/deploy", 404, params={"tenant": "tenant-a"})
    await expect(w.b, "DELETE", "/credentials/deploy", 404)
    await expect(w.b, "DELETE", "/credentials/deploy", 404, params={"tenant": "tenant-a"})
    await expect(w.a, "GET", "/credentials/deploy", 200)
    await expect(w.admin, "GET", "/credentials/deploy", 200, params={"tenant": "tenant-a"})


async def create_upload(w: World) -> None:
    made = await expect(
        w.b,
        "POST",
        "/uploads",
        201,
        params={"filename": "b.txt"},
        content=b"b",
        headers={"content-type": "application/octet-stream"},
    )
    await expect(w.a, "GET", f"/uploads/{made['upload_id']}", 404)


async def upload(w: World) -> None:
    await expect(w.b, "GET", f"/uploads/{w.upload}", 404)
    await expect(w.b, "DELETE", f"/uploads/{w.upload}", 404)
    await expect(w.a, "GET", f"/uploads/{w.upload}", 200)


async def artifacts(w: World) -> None:
    await expect(w.b, "GET", f"/jobs/{w.done}/artifacts", 404)
    files = (await expect(w.a, "GET", f"/jobs/{w.done}/artifacts", 200))["files"]
    assert [f["path"] for f in files] == ["out.txt"]


async def artifacts_tar(w: World) -> None:
    assert (await w.b.get(f"/jobs/{w.done}/artifacts.tar.gz")).status_code == 404
    assert (await w.a.get(f"/jobs/{w.done}/artifacts.tar.gz")).status_code == 200


async def artifact(w: World) -> None:
    assert (await w.b.get(f"/jobs/{w.done}/artifacts/out.txt")).status_code == 404
    mine = await w.a.get(f"/jobs/{w.done}/artifacts/out.txt")
    assert (mine.status_code, mine.content) == (200, b"hello")


async def diff(w: World) -> None:
    assert (await w.b.get(f"/jobs/{w.done}/diff")).status_code == 404
    assert (await w.a.get(f"/jobs/{w.done}/diff")).status_code == 200


async def keys(w: World) -> None:
    body = {"tenant": "tenant-b", "role": "admin", "name": "escalate"}
    await expect(w.b, "POST", "/keys", 403, json=body)
    await expect(w.b, "GET", "/keys", 403)


async def revoke(w: World) -> None:
    listed = (await expect(w.admin, "GET", "/keys", 200, params={"tenant": "tenant-a"}))["keys"]
    await expect(w.b, "DELETE", f"/keys/{listed[0]['id']}", 403)


async def tenants(w: World) -> None:
    names = [t["name"] for t in (await expect(w.b, "GET", "/tenants", 200))["tenants"]]
    assert names == ["tenant-b"]


async def tenant(w: World) -> None:
    await expect(w.b, "GET", "/tenants/tenant-a", 404)
    await expect(w.b, "PUT", "/tenants/tenant-a", 403, json={"max_running": 1})
    await expect(w.a, "GET", "/tenants/tenant-a", 200)


async def health(w: World) -> None:
    await w.b.get("/health")  # nobody's: it says how the replica is


async def metrics(w: World) -> None:
    await expect(w.b, "GET", "/metrics", 200)  # the operator's, by tenant (never a key)


async def stats_jobs(w: World) -> None:
    counts = await expect(w.b, "GET", "/stats/jobs", 200)
    assert counts["total"] == 1 and counts["by_status"]["completed"] == 1
    mine = (await expect(w.a, "GET", "/stats/jobs", 200))["by_status"]
    assert mine["pending"] + mine["running"] >= 1 and mine["completed"] >= 1


async def stats_activity(w: World) -> None:
    figures = await expect(w.b, "GET", "/stats/activity", 200)
    assert figures["queue"]["depth"] == 0  # A's pending jobs are not B's queue
    assert figures["jobs_by_status"]["completed"] == 1
    assert figures["webhook_deliveries"] == dict.fromkeys(figures["webhook_deliveries"], 0)
    assert sum(minute["submitted"] for minute in figures["minutes"]) == 1


MATRIX: dict[tuple[str, str], Check] = {
    ("post", "/jobs"): submit,
    ("get", "/jobs"): list_jobs,
    ("get", "/jobs/{job_id}"): get_job,
    ("delete", "/jobs/{job_id}"): cancel_job,
    ("get", "/jobs/{job_id}/wait"): wait_job,
    ("post", "/jobs/{job_id}/continue"): continue_job,
    ("get", "/sessions/{session_id}"): get_session,
    ("post", "/jobs/{job_id}/webhook/redeliver"): redeliver,
    ("get", "/jobs/{job_id}/events"): job_events,
    ("get", "/events"): all_events,
    ("get", "/profiles"): profiles,
    ("get", "/engines"): engines,
    ("get", "/configs/{type}"): configs,
    ("get", "/configs/{type}/{name}"): config,
    ("post", "/configs/{type}/{name}"): config_write,
    ("put", "/configs/{type}/{name}"): config_write,
    ("delete", "/configs/{type}/{name}"): config_write,
    ("get", "/credentials"): list_credentials,
    ("post", "/credentials"): create_credential,
    ("get", "/credentials/{name}"): credential,
    ("delete", "/credentials/{name}"): credential,
    ("post", "/uploads"): create_upload,
    ("get", "/uploads/{upload_id}"): upload,
    ("delete", "/uploads/{upload_id}"): upload,
    ("get", "/jobs/{job_id}/artifacts"): artifacts,
    ("get", "/jobs/{job_id}/artifacts.tar.gz"): artifacts_tar,
    ("get", "/jobs/{job_id}/artifacts/{path}"): artifact,
    ("get", "/jobs/{job_id}/diff"): diff,
    ("get", "/keys"): keys,
    ("post", "/keys"): keys,
    ("delete", "/keys/{key_id}"): revoke,
    ("get", "/tenants"): tenants,
    ("get", "/tenants/{name}"): tenant,
    ("put", "/tenants/{name}"): tenant,
    ("get", "/health"): health,
    ("get", "/metrics"): metrics,
    ("get", "/stats/jobs"): stats_jobs,
    ("get", "/stats/activity"): stats_activity,
}


def api_routes() -> set[tuple[str, str]]:
    document = create_app(Settings(database_url="postgresql://unused")).openapi()
    return {(method, path) for path, ops in document["paths"].items() for method in ops}


def test_every_route_has_an_isolation_check() -> None:
    missing = api_routes() - MATRIX.keys()
    assert not missing, f"routes without a tenant isolation check in MATRIX: {sorted(missing)}"
    assert not MATRIX.keys() - api_routes(), "MATRIX names routes the API no longer has"


# --- the world ----------------------------------------------------------------------------


@pytest.fixture
async def url(database_url: str) -> AsyncIterator[str]:
    settings = Settings(
        database_url=database_url,
        tower_runner="simulated",
        tower_api_key=ADMIN_KEY,
        secrets_key=SECRETS_KEY,
    )
    async with live_tower(settings, SimulatedRunner()) as url:
        yield url


async def key(admin: httpx.AsyncClient, tenant: str, role: str, name: str) -> str:
    body = {"tenant": tenant, "role": role, "name": name}
    made: str = (await expect(admin, "POST", "/keys", 201, json=body))["key"]
    return made


async def finished(client: httpx.AsyncClient, **fields: Any) -> str:
    job_id: str = (await expect(client, "POST", "/jobs", 202, json=job(**fields)))["job_id"]
    record = await expect(client, "GET", f"/jobs/{job_id}/wait", 200, params={"timeout": 60})
    assert record["status"] == "completed", record
    return job_id


# An artifact file, a diff and a session state for A's finished job, as its run would
# have stored them (tower/artifacts/store.py), so that A's own reads find something.
ARTIFACTS = """
WITH made AS (
    INSERT INTO job_artifacts (job_id, kind, path, size, mode, sha256, attempt)
    VALUES ($1, 'file', 'out.txt', 5, 420, 'x', 1), ($1, 'diff', '', 5, 420, 'x', 1),
           ($1, 'session', '', 5, 420, 'x', 1)
    RETURNING artifact_id
)
INSERT INTO job_artifact_chunks (artifact_id, seq, data)
SELECT artifact_id, 0, 'hello'::bytea FROM made
"""


@pytest.fixture
async def world(url: str, database_url: str) -> AsyncIterator[World]:
    async with client_for(url, ADMIN_KEY) as admin:
        keys = [
            await key(admin, "tenant-a", "submit", "a-bot"),
            await key(admin, "tenant-b", "submit", "b-bot"),
            await key(admin, "tenant-b", "read", "b-reader"),
        ]
        async with (
            client_for(url, keys[0]) as a,
            client_for(url, keys[1]) as b,
            client_for(url, keys[2]) as b_read,
        ):
            done = await finished(a, webhook_url=HOOK)
            connection = await asyncpg.connect(database_url)
            try:
                await connection.execute(ARTIFACTS, done)
            finally:
                await connection.close()
            pending = (await expect(a, "POST", "/jobs", 202, json=job(prompt=FOREVER)))["job_id"]
            upload = await expect(
                a,
                "POST",
                "/uploads",
                201,
                params={"filename": "a.txt"},
                content=b"a",
                headers={"content-type": "application/octet-stream"},
            )
            credential = {"name": "deploy", "kind": "git", "secret": "a-token"}
            await expect(a, "POST", "/credentials", 201, json=credential)
            b_job = await finished(b)
            yield World(a, b, b_read, admin, done, pending, upload["upload_id"], b_job)


async def test_another_tenants_resources_are_not_found_on_any_route(world: World) -> None:
    failures = []
    for (method, path), check in MATRIX.items():
        try:
            await check(world)
        except AssertionError as failure:
            failures.append(f"{method.upper()} {path}: {failure}")
    assert not failures, "\n".join(failures)


async def test_a_read_key_writes_nothing_on_any_route(world: World) -> None:
    """Every write of the API, with a read key: 403, before anything else is looked at."""
    for method, path in sorted(api_routes()):
        if method not in WRITES:
            continue
        concrete = path.format(
            job_id=world.done,
            type="profile",
            name="default",
            upload_id=world.upload,
            key_id="key_0000000000000000",
        )
        response = await world.b_read.request(method.upper(), concrete, json={})
        assert response.status_code == 403, (method, path, response.text)
