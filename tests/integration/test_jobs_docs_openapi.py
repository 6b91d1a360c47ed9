"""Offline /docs and the live OpenAPI document (engine and profile enums from the configs)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from tests.support.live import client_for, live_tower
from tower.execution.simulated import SimulatedRunner
from tower.settings import Settings


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(database_url=database_url, tower_runner="simulated")
    async with live_tower(settings, SimulatedRunner()) as url, client_for(url) as client:
        yield client


async def test_root_redirects_to_the_dashboard(client: httpx.AsyncClient) -> None:
    response = await client.get("/", follow_redirects=False)
    assert response.status_code == 307
    assert response.headers["location"] == "/ui/"


async def test_docs_page_loads_only_local_assets(client: httpx.AsyncClient) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    # No absolute or protocol-relative URL anywhere: nothing is fetched from a CDN.
    assert not re.search(r"https?:|//", page.text), page.text
    urls = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert len(urls) >= 2
    assert any(url.endswith(".js") for url in urls)
    assert any(url.endswith(".css") for url in urls)
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 100, url


async def test_docs_page_points_at_our_openapi(client: httpx.AsyncClient) -> None:
    page = (await client.get("/docs")).text
    assert 'data-openapi-url="/openapi.json"' in page
    start = await client.get("/docs/assets/swagger-init.js")
    assert start.headers["content-type"].startswith("text/javascript")
    assert "root.dataset.openapiUrl" in start.text
    assert "validatorUrl: null" in start.text


async def test_docs_page_runs_no_inline_script(client: httpx.AsyncClient) -> None:
    page = await client.get("/docs")
    assert re.findall(r"<script[^>]*>", page.text) == [
        '<script src="/docs/assets/swagger-ui-bundle.js">',
        '<script src="/docs/assets/swagger-init.js">',
    ]
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy.split("; ")
    assert "unsafe-inline" not in policy


async def test_only_known_assets_are_served(client: httpx.AsyncClient) -> None:
    for name in ("index.html", "swagger-ui.js.map", "..%2F__init__.py", "nope.css"):
        assert (await client.get(f"/docs/assets/{name}")).status_code == 404, name


async def enums(client: httpx.AsyncClient) -> tuple[list[str], list[str]]:
    document = (await client.get("/openapi.json")).json()
    properties = document["components"]["schemas"]["JobRequest"]["properties"]
    return properties["engine"]["enum"], properties["profile"]["enum"]


async def test_openapi_enums_are_the_shipped_configs(client: httpx.AsyncClient) -> None:
    engines, profiles = await enums(client)
    assert "claude-code" in engines
    assert "default" in profiles
    assert engines == sorted(engines)


async def test_openapi_enums_follow_config_changes_at_runtime(
    client: httpx.AsyncClient, database_url: str
) -> None:
    assert "claude-copy" not in (await enums(client))[0]
    db = await asyncpg.connect(database_url)
    try:
        content = await db.fetchval(
            "SELECT content FROM configs WHERE kind = 'engine' AND name = 'claude-code'"
        )
        async with db.transaction():
            await db.execute(
                "INSERT INTO configs (kind, name, content) VALUES ('engine', 'claude-copy', $1)",
                content.replace('id = "claude-code"', 'id = "claude-copy"'),
            )
            await db.execute("SELECT pg_notify('parpaing_configs', 'engine/claude-copy')")
    finally:
        await db.close()
    # Bounded poll: the reload runs in the tower on NOTIFY, with no event visible here.
    deadline = asyncio.get_running_loop().time() + 10
    while "claude-copy" not in (await enums(client))[0]:
        assert asyncio.get_running_loop().time() < deadline, "enum never listed the new engine"
        await asyncio.sleep(0.05)
    submitted = await client.post(
        "/jobs", json={"agent_id": "a", "engine": "claude-copy", "prompt": "sleep 3600"}
    )
    assert submitted.status_code == 202


async def test_every_route_that_needs_the_key_says_so(client: httpx.AsyncClient) -> None:
    # The document must not show a key-protected write as public (config writes did).
    paths = (await client.get("/openapi.json")).json()["paths"]
    for method in ("post", "put", "delete"):
        assert paths["/configs/{type}/{name}"][method]["security"] == [{"bearerAuth": []}]
    assert "security" not in paths["/configs/{type}/{name}"]["get"]
    assert paths["/jobs"]["post"]["security"] == [{"bearerAuth": []}]
