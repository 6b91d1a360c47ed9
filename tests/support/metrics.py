"""Reading a tower's /metrics in tests."""

from __future__ import annotations

import asyncio

import httpx
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    """Every sample of a scrape, keyed by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def open_streams(client: httpx.AsyncClient) -> dict[str, float]:
    """tower_open_streams by kind: the long polls and event streams the tower holds."""
    found = samples((await client.get("/metrics")).text)
    return {
        dict(labels)["kind"]: value
        for (name, labels), value in found.items()
        if name == "tower_open_streams"
    }


async def until_open_streams(
    client: httpx.AsyncClient, expected: dict[str, float], seconds: float = 30
) -> None:
    """Until the tower holds these open requests: that a server has taken a request in
    shows nowhere but in its metrics, so they are polled (bounded by `seconds`)."""
    async with asyncio.timeout(seconds):
        while True:
            if await open_streams(client) == expected:
                return
            await asyncio.sleep(0.02)
