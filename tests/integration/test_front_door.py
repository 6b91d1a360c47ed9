"""What the request gate checks at the door, on a real tower over HTTP: the Host header
(DNS rebinding against a keyless tower: 421), and a write's Content-Type (415, answered
before a byte of the body is read)."""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.support.live import client_for, live_tower
from tower.execution.simulated import SimulatedRunner
from tower.settings import Settings

KEY = "front-door-key"
JOB = {"agent_id": "door", "engine": "claude-code", "prompt": "print hello"}
REBOUND = "evil.example"


def settings_for(database_url: str, **values: Any) -> Settings:
    return Settings(database_url=database_url, tower_runner="simulated", **values)


@pytest.fixture
async def keyless_url(database_url: str) -> AsyncIterator[str]:
    async with live_tower(settings_for(database_url), SimulatedRunner()) as url:
        yield url


@pytest.fixture
async def keyed_url(database_url: str) -> AsyncIterator[str]:
    settings = settings_for(database_url, tower_api_key=KEY)
    async with live_tower(settings, SimulatedRunner()) as url:
        yield url


def port_of(url: str) -> int:
    port = urllib.parse.urlsplit(url).port
    assert port is not None
    return port


# --- the Host header ----------------------------------------------------------------------


@pytest.mark.parametrize("host", [REBOUND, f"{REBOUND}:8080", "192.168.1.10", "127.0.0.1.nip.io"])
async def test_a_keyless_tower_refuses_a_rebound_host(keyless_url: str, host: str) -> None:
    async with client_for(keyless_url) as client:
        submitted = await client.post("/jobs", json=JOB, headers={"Host": host})
        read = await client.get("/jobs", headers={"Host": host})
        page = await client.get("/ui/", headers={"Host": host})
        listed = (await client.get("/jobs")).json()
    for response in (submitted, read, page):
        assert response.status_code == 421, response.text
        assert "ALLOWED_HOSTS" in response.json()["detail"]
    assert listed["total"] == 0, "the refused submit created a job"


@pytest.mark.parametrize("name", ["localhost", "127.0.0.1", "[::1]", "LOCALHOST"])
async def test_a_keyless_tower_answers_its_loopback_names(keyless_url: str, name: str) -> None:
    async with client_for(keyless_url) as client:
        for host in (name, f"{name}:{port_of(keyless_url)}"):
            response = await client.get("/jobs", headers={"Host": host})
            assert response.status_code == 200, (host, response.text)


async def test_a_keyed_tower_answers_any_host_unless_told(keyed_url: str) -> None:
    async with client_for(keyed_url, KEY) as client:
        response = await client.get("/jobs", headers={"Host": REBOUND})
    assert response.status_code == 200, response.text


async def test_allowed_hosts_names_the_hosts_served(database_url: str) -> None:
    settings = settings_for(database_url, allowed_hosts="tower.example, 10.0.0.5:8080, ::1")
    async with live_tower(settings, SimulatedRunner()) as url, client_for(url) as client:
        statuses = {
            host: (await client.get("/jobs", headers={"Host": host})).status_code
            for host in (
                *("tower.example", "TOWER.example:443", "10.0.0.5:8080", "[::1]:9"),
                *("10.0.0.5:9090", "localhost", "127.0.0.1", REBOUND),
            )
        }
    assert statuses == {
        **dict.fromkeys(("tower.example", "TOWER.example:443", "10.0.0.5:8080", "[::1]:9"), 200),
        **dict.fromkeys(("10.0.0.5:9090", "localhost", "127.0.0.1", REBOUND), 421),
    }


async def test_a_star_serves_any_host_without_a_key(database_url: str) -> None:
    settings = settings_for(database_url, allowed_hosts="*")
    async with live_tower(settings, SimulatedRunner()) as url, client_for(url) as client:
        response = await client.get("/jobs", headers={"Host": REBOUND})
    assert response.status_code == 200


# --- the Content-Type of a write ------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; b=x", "json"],
)
async def test_a_write_whose_body_is_not_json_is_refused(
    keyed_url: str, content_type: str | None
) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    async with client_for(keyed_url, KEY) as client:
        submitted = await client.post("/jobs", content=json.dumps(JOB), headers=headers)
        configured = await client.put(
            "/configs/profile/door", content=json.dumps({"content": "x"}), headers=headers
        )
        listed = (await client.get("/jobs")).json()
    for response in (submitted, configured):
        assert response.status_code == 415, response.text
        assert response.json() == {"detail": "Content-Type must be application/json"}
    assert listed["total"] == 0


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "Application/JSON; charset=utf-8", "application/merge-patch+json"],
)
async def test_json_in_any_spelling_is_taken(keyed_url: str, content_type: str) -> None:
    async with client_for(keyed_url, KEY) as client:
        response = await client.post(
            "/jobs", content=json.dumps(JOB), headers={"Content-Type": content_type}
        )
    assert response.status_code == 202, response.text


async def test_a_write_without_a_body_needs_no_content_type(keyed_url: str) -> None:
    async with client_for(keyed_url, KEY) as client:
        redelivered = await client.post("/jobs/door-0123456789ab/webhook/redeliver")
        cancelled = await client.delete("/jobs/door-0123456789ab")
    assert redelivered.status_code == 404, redelivered.text
    assert cancelled.status_code == 404, cancelled.text


async def test_the_content_type_is_refused_before_the_body_is_read(keyed_url: str) -> None:
    # Only the head goes out, announcing 50 MB: the answer needs none of the body.
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(keyed_url))
    head = [
        "POST /jobs HTTP/1.1",
        f"Host: 127.0.0.1:{port_of(keyed_url)}",
        f"Authorization: Bearer {KEY}",
        "Content-Type: text/plain",
        f"Content-Length: {50 << 20}",
    ]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
    try:
        status_line = await asyncio.wait_for(reader.readline(), 30)
    finally:
        writer.close()
    assert status_line.split()[1] == b"415", status_line


async def test_without_a_key_the_401_comes_first(keyed_url: str) -> None:
    async with client_for(keyed_url) as anonymous:
        response = await anonymous.post("/jobs", content=b"x", headers={"Content-Type": "text/x"})
    assert response.status_code == 401


async def test_the_refusals_still_carry_the_security_headers(keyless_url: str) -> None:
    async with httpx.AsyncClient(base_url=keyless_url) as client:
        misdirected = await client.get("/jobs", headers={"Host": REBOUND})
        unsupported = await client.post("/jobs", content=b"{}", headers={"Content-Type": "a/b"})
    assert (misdirected.status_code, unsupported.status_code) == (421, 415)
    for response in (misdirected, unsupported):
        assert response.headers["X-Content-Type-Options"] == "nosniff"
