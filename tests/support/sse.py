"""A Server-Sent Events reader for tests, over an httpx streaming response."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

KEEPALIVE = "keepalive"


@dataclass(frozen=True)
class Event:
    id: int
    name: str
    data: dict[str, Any]


async def events(response: httpx.Response) -> AsyncIterator[Event | str]:
    """Each event as it arrives; a comment line (keep-alive) as its text."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line.startswith(":"):
            yield line[1:].strip()
        elif line:
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        elif fields:
            yield Event(int(fields["id"]), fields["event"], json.loads(fields["data"]))
            fields = {}


async def only_events(response: httpx.Response) -> AsyncIterator[Event]:
    async for item in events(response):
        if isinstance(item, Event):
            yield item


async def collect(
    client: httpx.AsyncClient, path: str, headers: dict[str, str] | None = None
) -> list[Event]:
    """Every event of a stream that ends by itself (a job's, up to its terminal event)."""
    async with client.stream("GET", path, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        return [event async for event in only_events(response)]
