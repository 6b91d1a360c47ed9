"""A TCP forwarder that a test can cut: one tower's way to PostgreSQL, and only its.

Point a tower's DATABASE_URL at the forwarder's port and it reaches the real server
through it; `cut()` drops every connection it carries and refuses new ones (accepted,
then closed at once, as a firewall that resets would), while every other client still
reaches the server directly. `restore()` lets connections through again.

It runs in the test's event loop: tests that use it wait with asyncio, never block.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

CHUNK = 64 * 1024


class TcpForwarder:
    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._pipes: set[asyncio.Task[None]] = set()
        self.cut_off = False
        self.refused = 0  # connections refused while cut

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> TcpForwarder:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._drop_all()
            await self._server.wait_closed()
            await asyncio.gather(*self._pipes, return_exceptions=True)
            self._server = None

    def cut(self) -> None:
        """Drop every connection carried and refuse new ones until `restore()`."""
        self.cut_off = True
        self._drop_all()

    def restore(self) -> None:
        self.cut_off = False

    def _drop_all(self) -> None:
        for writer in list(self._open):
            _abort(writer)
        self._open.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut_off:
            self.refused += 1
            _abort(writer)
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        except (OSError, asyncio.CancelledError):
            # Cancelled: the test's loop is closing; nothing waits for this connection.
            _abort(writer)
            return
        if self.cut_off:  # cut while connecting
            _abort(writer)
            _abort(upstream_writer)
            return
        self._open.update((writer, upstream_writer))
        for source, sink in ((reader, upstream_writer), (upstream_reader, writer)):
            pipe = asyncio.create_task(self._pipe(source, sink))
            self._pipes.add(pipe)
            pipe.add_done_callback(self._pipes.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(CHUNK):
                sink.write(data)
                await sink.drain()
        except (OSError, RuntimeError):
            pass  # dropped by cut(), or the other side went
        finally:
            self._open.discard(sink)
            _abort(sink)


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close at once (a reset), without waiting for buffered data."""
    with contextlib.suppress(OSError, RuntimeError):
        writer.transport.abort()


@contextlib.asynccontextmanager
async def forwarding(target_host: str, target_port: int) -> AsyncIterator[TcpForwarder]:
    forwarder = await TcpForwarder(target_host, target_port).start()
    try:
        yield forwarder
    finally:
        await forwarder.close()
