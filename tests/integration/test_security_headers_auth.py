"""Bearer auth on every job route, and the security headers on every response."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.support.live import client_for, live_tower
from tower.app import SECURITY_HEADERS
from tower.execution.simulated import SimulatedRunner
from tower.settings import Settings

API_KEY = "s3cret-key"
JOB_ROUTES = [
    ("POST", "/jobs"),
    ("GET", "/jobs"),
    ("GET", "/jobs/someone-0123456789ab"),
    ("DELETE", "/jobs/someone-0123456789ab"),
    ("GET", "/jobs/someone-0123456789ab/wait"),
]
PUBLIC_ROUTES = ["/", "/docs", "/openapi.json", "/docs/assets/swagger-ui.css"]
BODY = {"agent_id": "someone", "engine": "claude-code", "prompt": "sleep 3600"}


@pytest.fixture
async def base_url(database_url: str) -> AsyncIterator[str]:
    settings = Settings(database_url=database_url, tower_runner="simulated", tower_api_key=API_KEY)
    async with live_tower(settings, SimulatedRunner()) as url:
        yield url


def request(client: httpx.AsyncClient, method: str, path: str) -> httpx.Request:
    body = BODY if method == "POST" else None
    return client.build_request(method, path, json=body, params={"timeout": "0.1"})


@pytest.mark.parametrize(("method", "path"), JOB_ROUTES)
@pytest.mark.parametrize("key", ["", "wrong-key", API_KEY + "x", API_KEY[:-1]])
async def test_job_routes_refuse_missing_or_wrong_key(
    base_url: str, method: str, path: str, key: str
) -> None:
    async with client_for(base_url, key) as client:
        response = await client.send(request(client, method, path))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json() == {"detail": "Missing or invalid API key"}


@pytest.mark.parametrize("authorization", [API_KEY, f"Basic {API_KEY}", f"Bearer  {API_KEY}"])
async def test_key_must_come_as_a_bearer_token(base_url: str, authorization: str) -> None:
    async with client_for(base_url) as client:
        response = await client.get("/jobs", headers={"Authorization": authorization})
    assert response.status_code == 401


@pytest.mark.parametrize(("method", "path"), JOB_ROUTES)
async def test_job_routes_accept_the_key(base_url: str, method: str, path: str) -> None:
    async with client_for(base_url, API_KEY) as client:
        response = await client.send(request(client, method, path))
    # Past auth: the route's own answer (the sample job does not exist).
    assert response.status_code in (200, 202, 404)
    if path == "/jobs":
        assert response.status_code == (202 if method == "POST" else 200)


async def test_unauthenticated_submit_creates_nothing(base_url: str) -> None:
    async with client_for(base_url) as anonymous, client_for(base_url, API_KEY) as client:
        assert (await anonymous.post("/jobs", json=BODY)).status_code == 401
        assert (await client.get("/jobs")).json()["total"] == 0


@pytest.mark.parametrize("path", PUBLIC_ROUTES)
async def test_docs_routes_stay_public(base_url: str, path: str) -> None:
    async with client_for(base_url) as client:
        response = await client.get(path)
    assert response.status_code in (200, 307)


async def test_openapi_declares_bearer_on_job_routes_only(base_url: str) -> None:
    async with client_for(base_url) as client:
        document = (await client.get("/openapi.json")).json()
    scheme = document["components"]["securitySchemes"]["bearerAuth"]
    assert scheme == {"type": "http", "scheme": "bearer"}
    for method, path in JOB_ROUTES:
        template = path.replace("someone-0123456789ab", "{job_id}")
        operation = document["paths"][template][method.lower()]
        assert operation["security"] == [{"bearerAuth": []}], (method, path)


async def test_security_headers_on_success_errors_and_docs(base_url: str) -> None:
    async with client_for(base_url) as anonymous, client_for(base_url, API_KEY) as client:
        responses = [
            await client.post("/jobs", json=BODY),  # 202
            await client.get("/jobs"),  # 200
            await client.get("/jobs/someone-0123456789ab"),  # 404
            await client.delete("/jobs/someone-0123456789ab"),  # 404
            await client.get("/jobs", params={"limit": 0}),  # 422
            await client.post("/jobs", content=b"{", headers={"content-type": "application/json"}),
            await anonymous.get("/jobs"),  # 401
            await anonymous.get("/"),  # 307
            await anonymous.get("/docs"),
            await anonymous.get("/docs/assets/swagger-ui-bundle.js"),
            await anonymous.get("/docs/assets/nope.js"),  # 404
            await anonymous.get("/openapi.json"),
        ]
    statuses = {response.status_code for response in responses}
    assert {200, 202, 307, 401, 404, 422} <= statuses
    for response in responses:
        for name, value in SECURITY_HEADERS.items():
            assert response.headers.get(name) == value, (response.request.url, name)


async def test_without_a_configured_key_job_routes_are_open(database_url: str) -> None:
    settings = Settings(database_url=database_url, tower_runner="simulated")
    async with live_tower(settings, SimulatedRunner()) as url, client_for(url) as client:
        assert (await client.get("/jobs")).status_code == 200
