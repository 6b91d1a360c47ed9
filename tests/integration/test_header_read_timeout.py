"""A client that does not finish sending its request's headers is cut off after
HEADER_READ_TIMEOUT_SECONDS (slowloris), on a new connection and on a kept-alive one.
A `parpaing serve` process, raw sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.support.towers import TowerProcess, start_tower

DEADLINE = 60.0  # a bound on waiting for the close, never an expectation of speed


@pytest.fixture
async def tower(database_url: str, tmp_path: Path) -> AsyncIterator[TowerProcess]:
    process = await start_tower(database_url, tmp_path, "slowloris", header_read_timeout_seconds=1)
    yield process
    process.terminate()


async def connect(tower: TowerProcess) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    address = urlsplit(tower.base_url)
    return await asyncio.open_connection(address.hostname, address.port)


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the tower sends until it closes the connection."""
    async with asyncio.timeout(DEADLINE):
        return await reader.read()


@pytest.mark.parametrize("sent", [b"", b"GET /openapi.js", b"GET / HTTP/1.1\r\nHost: x\r\n"])
async def test_a_request_never_finished_is_cut_off(tower: TowerProcess, sent: bytes) -> None:
    reader, writer = await connect(tower)
    writer.write(sent)
    await writer.drain()
    assert await until_closed(reader) == b""
    writer.close()


async def test_a_kept_alive_connection_is_cut_off_in_its_next_request(
    tower: TowerProcess,
) -> None:
    reader, writer = await connect(tower)
    host = urlsplit(tower.base_url).netloc.encode()
    writer.write(b"GET /openapi.json HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"connection: close" not in head.lower()
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    await reader.readexactly(length)

    writer.write(b"GET /openapi.json HT")  # the next request, never finished
    await writer.drain()
    assert await until_closed(reader) == b""
    writer.close()
