"""The HTTP server around the app, with a shutdown that loses no job.

On SIGTERM (or Ctrl-C) uvicorn first closes its listeners and waits for open requests,
and only then runs the app's lifespan shutdown. Claiming must stop before that wait,
not after it, so the signal also drains the dispatcher at once (tower.app.begin_shutdown).
Long polls end at once with a 503 (they watch TowerState.stopping); other open requests
get HTTP_DRAIN_SECONDS, as event streams would otherwise hold the shutdown for as long as
their clients like; their clients reconnect (to another replica, behind a load balancer).
A second signal ends the running jobs' grace: they are handed back at once, and the
process exits as soon as that is done.

A connection that has not sent a request's headers within HEADER_READ_TIMEOUT_SECONDS is
closed (HeaderDeadline): uvicorn bounds only the idle time between requests.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from types import FrameType

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from tower.app import begin_shutdown, hurry_shutdown
from tower.settings import Settings

HTTP_DRAIN_SECONDS = 5


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self._app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit:
            hurry_shutdown(self._app)  # asked again: no grace for the running jobs
        else:
            begin_shutdown(self._app)
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await super().shutdown(sockets)
        if self.force_exit:
            # A second Ctrl-C makes uvicorn skip the lifespan's shutdown; tower's hands
            # the running jobs back and removes their containers, so it must still run.
            await self.lifespan.shutdown()


def log_to_stderr() -> None:
    """Tower's own INFO lines (claims handed back, draining, reaping) next to uvicorn's:
    an operator reading `docker logs` needs them to follow a restart."""
    logger = logging.getLogger("tower")
    if logger.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s:  %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


class HeaderDeadline(HttpToolsProtocol):
    """uvicorn's HTTP protocol with a bound on the time a client takes to send a
    request's line and headers (uvicorn has none: a client sending a byte now and then
    would hold its connection for ever). The clock starts when the connection opens,
    and on a kept-alive connection when the next request's first byte arrives (the
    idle time between requests is uvicorn's keep-alive timeout's); it stops when the
    headers are complete, so a slow body or a long answer is not cut."""

    header_timeout = 10.0
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_header_clock()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._header_timer is None:
            self._start_header_clock()

    def on_headers_complete(self) -> None:
        self._stop_header_clock()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_clock()
        super().connection_lost(exc)

    def _start_header_clock(self) -> None:
        self._stop_header_clock()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _stop_header_clock(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()


def header_deadline(seconds: float) -> type[HeaderDeadline]:
    """The protocol class uvicorn instantiates per connection, with its bound."""
    return type("HeaderDeadline", (HeaderDeadline,), {"header_timeout": seconds})


def run_server(app: FastAPI, host: str, port: int) -> None:
    log_to_stderr()
    settings: Settings = app.state.settings
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="info",
        # uvloop and httptools: the event loop and HTTP parser in C, as production runs.
        loop="uvloop",
        http=header_deadline(settings.header_read_timeout_seconds),
        timeout_graceful_shutdown=HTTP_DRAIN_SECONDS,
    )
    DrainingServer(config, app).run()
