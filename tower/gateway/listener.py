"""Tower's answer to the gateway's token checks, on listeners of their own.

The check is not on the API port, so nothing in front of tower (a load balancer, the
internet) can reach it: in all-in-one mode it is a Unix socket in the state dir, which
is mounted into the gateway container; in compose mode also host:port on the private
network tower shares with the gateway (GATEWAY_AUTH_LISTEN). It answers one question,
"is this token a running job's?", with 200 (and the job's id) or 401, and changes nothing.

Replicas sharing a host (and its state dir) each answer on a socket of their own: slot N
is `auth-N.sock` beside GATEWAY_AUTH_SOCKET's name, held by whoever holds the lock on
`auth-N.lock` (flock, released by the kernel when its holder dies, kill -9 included). A
replica takes the lowest free slot, unlinks only its own socket, and the gateway tries
the slots in turn (gateway/render-config), so replicas come and go without cutting the
others off.

The gateway forwards inference calls only. It refuses any other path itself, and asks the
same question with the provider named in X-Gateway-Refused: then a running job's token
gets 403 and the refusal is counted (by provider), any other token 401 as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tower.db.outage import DATABASE_ERRORS
from tower.db.pool import Pool
from tower.errors import Invalid
from tower.gateway.providers import CREDENTIAL_VARIABLES
from tower.gateway.service import job_of_token
from tower.settings import Settings, gateway_auth_socket

log = logging.getLogger(__name__)

AUTH_PATH = "/gateway/auth"
TOKEN_HEADER = "x-gateway-token"
JOB_HEADER = "X-Parpaing-Job"
# Set by the gateway on a call it refused as not inference: the provider's route.
REFUSED_HEADER = "x-gateway-refused"
# The gateway's nginx workers run as another user than tower: they must be able to connect.
SOCKET_MODE = 0o666
SOCKET_DIR_MODE = 0o755
START_TIMEOUT = 10.0
# How many replicas on one host can each have a socket; the gateway's upstream lists as
# many (TOWER_AUTH_SLOTS). A replica finding none free serves without: the others answer
# for its jobs too, since any replica can check any token.
AUTH_SLOTS = 16


# What a refusal is counted against: the provider, or "other" (a bounded label whatever
# the header says; only the gateway can send one).
Refused = Callable[[str], None]


def _ignore(_provider: str) -> None:
    return None


def auth_app(pool: Pool, refused: Refused = _ignore) -> Starlette:
    async def check(request: Request) -> Response:
        try:
            job_id = await job_of_token(pool, request.headers.get(TOKEN_HEADER, ""))
        except DATABASE_ERRORS as exc:
            # Not a 401: the gateway says "cannot check" rather than "bad token".
            log.warning("gateway token check failed: %r", exc)
            return Response(status_code=503)
        if job_id is None:
            return Response(status_code=401)
        provider = request.headers.get(REFUSED_HEADER)
        if provider:
            provider = provider if provider in CREDENTIAL_VARIABLES else "other"
            log.info("job %s: the gateway refused a call to %s (not inference)", job_id, provider)
            refused(provider)
            return Response(status_code=403, headers={JOB_HEADER: job_id})
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


@dataclass(frozen=True)
class SocketSlot:
    """Slot `number`: its socket's path, and the open lock file that makes it ours."""

    number: int
    path: Path
    lock_fd: int


def slot_socket(base: Path, number: int) -> Path:
    """Slot `number`'s socket beside `base` (GATEWAY_AUTH_SOCKET): auth.sock -> auth-3.sock."""
    return base.with_name(f"{base.stem}-{number}{base.suffix}")


def take_slot(base: Path, slots: int = AUTH_SLOTS) -> SocketSlot | None:
    """The lowest slot no living replica holds, locked; None when all are taken."""
    base.parent.mkdir(parents=True, exist_ok=True)
    base.parent.chmod(SOCKET_DIR_MODE)
    for number in range(slots):
        lock = base.with_name(f"{base.stem}-{number}.lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        path = slot_socket(base, number)
        # A socket left by a replica that died: the slot is ours, nobody answers on it.
        path.unlink(missing_ok=True)
        return SocketSlot(number, path, fd)
    return None


def release_slot(slot: SocketSlot) -> None:
    """Unlink our socket, then let the slot go: in this order, so that the next holder's
    socket is never the one unlinked."""
    slot.path.unlink(missing_ok=True)
    os.close(slot.lock_fd)


class SlotListeners:
    """An app served on this replica's slot beside a base socket and on host:port, until
    stop(): the gateway's token check (AuthListeners), the egress proxy's questions
    (tower/egress/listener.py)."""

    def __init__(self, what: str, limit_concurrency: int | None = None) -> None:
        self.what = what  # how logs and errors name it: "gateway auth listener"
        self.limit_concurrency = limit_concurrency  # uvicorn's bound (None: none)
        self.slot: SocketSlot | None = None
        self._servers: list[tuple[_EmbeddedServer, asyncio.Task[None]]] = []

    @property
    def socket(self) -> Path | None:
        return self.slot.path if self.slot is not None else None

    async def serve(self, app: Starlette, base: Path | None, listen: str, field: str) -> None:
        """Serve `app` on a free slot beside `base` (None: on no socket) and on `listen`
        (host:port of setting `field`; "": on none). On a failure, stop what started."""
        try:
            if base is not None:
                await self._serve_unix(app, base)
            if listen:
                host, port = host_port(listen, field)
                await self._serve(self._config(app, host=host, port=port))
        except BaseException:
            await self.stop()
            raise

    async def _serve_unix(self, app: Starlette, base: Path) -> None:
        self.slot = await asyncio.to_thread(take_slot, base)
        if self.slot is None:
            log.warning(
                "the %s's %d sockets beside %s are all held by other replicas: this one "
                "serves none (the others answer for its jobs)",
                self.what,
                AUTH_SLOTS,
                base,
            )
            return
        await self._serve(self._config(app, uds=str(self.slot.path)))
        # Who connects (the gateway's nginx, the proxy's helpers) runs as another user.
        await asyncio.to_thread(os.chmod, self.slot.path, SOCKET_MODE)

    async def _serve(self, config: uvicorn.Config) -> None:
        server = _EmbeddedServer(config)
        task = asyncio.create_task(server.serve(), name=self.what)
        self._servers.append((server, task))
        deadline = asyncio.get_running_loop().time() + START_TIMEOUT
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError(f"the {self.what} stopped during start-up")
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"the {self.what} did not start in time")
            await asyncio.sleep(0.01)

    def _config(
        self, app: Starlette, *, uds: str | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> uvicorn.Config:
        return uvicorn.Config(
            app,
            uds=uds,
            host=host,
            port=port,
            log_level="warning",
            lifespan="off",
            access_log=False,
            limit_concurrency=self.limit_concurrency,
        )

    async def stop(self) -> None:
        for server, _task in self._servers:
            server.should_exit = True
        for _server, task in self._servers:
            with contextlib.suppress(Exception, SystemExit):
                await task
        self._servers.clear()
        if self.slot is not None:
            await asyncio.to_thread(release_slot, self.slot)
            self.slot = None


class AuthListeners(SlotListeners):
    """The auth app served on each configured address until stop()."""

    def __init__(self) -> None:
        super().__init__("gateway auth listener")

    @classmethod
    async def start(
        cls, settings: Settings, pool: Pool, *, unix_socket: bool, refused: Refused = _ignore
    ) -> AuthListeners:
        """`refused` counts the gateway's refusals of a running job's calls."""
        listeners = cls()
        base = gateway_auth_socket(settings) if unix_socket else None
        app = auth_app(pool, refused)
        await listeners.serve(app, base, settings.gateway_auth_listen, "gateway_auth_listen")
        return listeners


def host_port(listen: str, field: str) -> tuple[str, int]:
    """The host and port of a listen setting (`field`: its name, lower case)."""
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise Invalid(f"{field.upper()} must be host:port, not {listen!r}", field=field)
    return host.strip("[]"), int(port)
