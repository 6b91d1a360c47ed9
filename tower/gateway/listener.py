"""Tower's answer to the gateway's token checks, on listeners of their own.

The check is not on the API port, so nothing in front of tower (a load balancer, the
internet) can reach it: in all-in-one mode it is a Unix socket in the state dir, which
is mounted into the gateway container; in compose mode also host:port on the private
network tower shares with the gateway (GATEWAY_AUTH_LISTEN). It answers one question,
"is this token a running job's?", with 200 (and the job's id) or 401, and changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tower.db.outage import DATABASE_ERRORS
from tower.db.pool import Pool
from tower.errors import Invalid
from tower.gateway.service import job_of_token
from tower.settings import Settings, gateway_auth_socket

log = logging.getLogger(__name__)

AUTH_PATH = "/gateway/auth"
TOKEN_HEADER = "x-gateway-token"
JOB_HEADER = "X-Parpaing-Job"
# The gateway's nginx workers run as another user than tower: they must be able to connect.
SOCKET_MODE = 0o666
SOCKET_DIR_MODE = 0o755
START_TIMEOUT = 10.0


def auth_app(pool: Pool) -> Starlette:
    async def check(request: Request) -> Response:
        try:
            job_id = await job_of_token(pool, request.headers.get(TOKEN_HEADER, ""))
        except DATABASE_ERRORS as exc:
            # Not a 401: the gateway says "cannot check" rather than "bad token".
            log.warning("gateway token check failed: %r", exc)
            return Response(status_code=503)
        if job_id is None:
            return Response(status_code=401)
        return Response(status_code=200, headers={JOB_HEADER: job_id})

    return Starlette(routes=[Route(AUTH_PATH, check, methods=["GET"])])


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server inside tower's own loop: the main server owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def wanted(settings: Settings) -> tuple[bool, bool]:
    """(Unix socket, TCP): the socket whenever this tower runs a gateway or was given a
    path for one; TCP when GATEWAY_AUTH_LISTEN names an address."""
    docker = settings.tower_runner == "docker"
    unix = docker and (settings.gateway_managed or bool(settings.gateway_auth_socket))
    return unix, bool(settings.gateway_auth_listen)


class AuthListeners:
    """The auth app served on each configured address until stop()."""

    def __init__(self) -> None:
        self._servers: list[tuple[_EmbeddedServer, asyncio.Task[None]]] = []
        self.socket: Path | None = None

    @classmethod
    async def start(cls, settings: Settings, pool: Pool, *, unix_socket: bool) -> AuthListeners:
        listeners = cls()
        app = auth_app(pool)
        try:
            if unix_socket:
                listeners.socket = gateway_auth_socket(settings)
                await listeners._serve_unix(app, listeners.socket)
            if settings.gateway_auth_listen:
                host, port = _host_port(settings.gateway_auth_listen)
                await listeners._serve(_config(app, host=host, port=port))
        except BaseException:
            await listeners.stop()
            raise
        return listeners

    async def _serve_unix(self, app: Starlette, path: Path) -> None:
        await asyncio.to_thread(_prepare_socket_path, path)
        await self._serve(_config(app, uds=str(path)))
        await asyncio.to_thread(os.chmod, path, SOCKET_MODE)

    async def _serve(self, config: uvicorn.Config) -> None:
        server = _EmbeddedServer(config)
        task = asyncio.create_task(server.serve(), name="gateway-auth")
        self._servers.append((server, task))
        deadline = asyncio.get_running_loop().time() + START_TIMEOUT
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("the gateway auth listener stopped during start-up")
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError("the gateway auth listener did not start in time")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        for server, _task in self._servers:
            server.should_exit = True
        for _server, task in self._servers:
            with contextlib.suppress(Exception, SystemExit):
                await task
        self._servers.clear()
        if self.socket is not None:
            await asyncio.to_thread(self.socket.unlink, missing_ok=True)


def _prepare_socket_path(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(SOCKET_DIR_MODE)
    # A socket file left by a tower that died; nobody answers on it any more.
    path.unlink(missing_ok=True)


def _config(
    app: Starlette, *, uds: str | None = None, host: str = "127.0.0.1", port: int = 0
) -> uvicorn.Config:
    return uvicorn.Config(
        app, uds=uds, host=host, port=port, log_level="warning", lifespan="off", access_log=False
    )


def _host_port(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise Invalid(
            f"GATEWAY_AUTH_LISTEN must be host:port, not {listen!r}", field="gateway_auth_listen"
        )
    return host.strip("[]"), int(port)
