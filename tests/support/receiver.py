"""A real HTTP webhook receiver on loopback, answering from a script.

Each request gets the next scripted answer: a status code, or HOLD (the connection is
kept open, unanswered, until the receiver closes: a receiver that hangs). After the
script runs out every request gets `then`. Tests wait for the n-th request with
`wait_for(n)`: ordered by events, not sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

HOLD = -1
REASONS = {200: "OK", 204: "No Content", 410: "Gone", 500: "Internal Server Error"}


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    def __init__(self, script: list[int], then: int = 200) -> None:
        self._script = list(script)
        self._then = then
        self.requests: list[Received] = []
        self._arrived = asyncio.Condition()
        self._closing = asyncio.Event()
        self._server: asyncio.Server | None = None
        self.url = ""

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/hook"

    async def close(self) -> None:
        self._closing.set()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    async def wait_for(self, count: int, within: float = 60) -> list[Received]:
        """The first `count` requests, once they have arrived (at most `within` seconds)."""
        async with self._arrived:
            await asyncio.wait_for(
                self._arrived.wait_for(lambda: len(self.requests) >= count), within
            )
            return self.requests[:count]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            received = await _read_request(reader)
            async with self._arrived:
                self.requests.append(received)
                answer = self._script.pop(0) if self._script else self._then
                self._arrived.notify_all()
            if answer == HOLD:
                await self._closing.wait()
                return
            reason = REASONS.get(answer, "Status")
            head = f"HTTP/1.1 {answer} {reason}\r\ncontent-length: 2\r\nconnection: close\r\n"
            writer.write(head.encode() + b"\r\nok")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


async def _read_request(reader: asyncio.StreamReader) -> Received:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    request_line, *header_lines = head.split("\r\n")
    headers: dict[str, str] = {}
    for line in header_lines:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = await reader.readexactly(length) if length else b""
    return Received(request_line.split(" ")[1], headers, body)


@contextlib.asynccontextmanager
async def receiver(script: list[int], then: int = 200) -> AsyncIterator[Receiver]:
    server = Receiver(script, then)
    await server.start()
    try:
        yield server
    finally:
        await server.close()
