"""Replicas sharing a host each answer the gateway's token checks on a socket of their
own (tower/gateway/listener.py): none unlinks another's, a stop or a kill -9 leaves the
others answering, and replicas starting at the same instant all start.

In-process listeners are separate replicas here (flock locks belong to open files, not
processes); the killed replica is a real process.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tower.db.pool import Pool
from tower.gateway import tokens
from tower.gateway.listener import AUTH_PATH, AuthListeners, slot_socket, take_slot
from tower.settings import Settings

# A replica that takes a slot, answers on its socket, and waits to be killed.
HOLDER = """
import socket, sys
from pathlib import Path
from tower.gateway.listener import take_slot
slot = take_slot(Path(sys.argv[1]))
server = socket.socket(socket.AF_UNIX)
server.bind(str(slot.path))
server.listen()
print(slot.number, flush=True)
sys.stdin.read()
"""


@pytest.fixture
def base() -> Iterator[Path]:
    # Short: a Unix socket's path must fit in 107 bytes.
    directory = Path(tempfile.mkdtemp(prefix="pgs-", dir="/tmp"))
    yield directory / "auth.sock"
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
async def replicas(pool: Pool, base: Path) -> AsyncIterator[list[AuthListeners]]:
    started: list[AuthListeners] = []
    yield started
    for listeners in started:
        await listeners.stop()


async def start(pool: Pool, base: Path, into: list[AuthListeners]) -> AuthListeners:
    settings = Settings(gateway_auth_socket=str(base))
    listeners = await AuthListeners.start(settings, pool, unix_socket=True)
    into.append(listeners)
    return listeners


async def answers(socket: Path) -> bool:
    """Tower's token check answered on `socket` (a random token: a 401)."""
    transport = httpx.AsyncHTTPTransport(uds=str(socket))
    async with httpx.AsyncClient(transport=transport, base_url="http://tower") as client:
        reply = await client.get(AUTH_PATH, headers={"X-Gateway-Token": tokens.mint()})
    return reply.status_code == 401


async def test_a_replica_stopping_leaves_the_others_socket_and_its_slot_is_taken_again(
    pool: Pool, base: Path, replicas: list[AuthListeners]
) -> None:
    first = await start(pool, base, replicas)
    second = await start(pool, base, replicas)
    assert (first.socket, second.socket) == (slot_socket(base, 0), slot_socket(base, 1))
    assert await answers(slot_socket(base, 0)) and await answers(slot_socket(base, 1))

    await first.stop()
    assert not slot_socket(base, 0).exists()
    assert await answers(slot_socket(base, 1))
    third = await start(pool, base, replicas)  # the lowest free slot: the gateway's first
    assert third.socket == slot_socket(base, 0)
    await second.stop()
    assert await answers(slot_socket(base, 0))


async def test_replicas_starting_at_the_same_instant_all_start_on_slots_of_their_own(
    pool: Pool, base: Path, replicas: list[AuthListeners]
) -> None:
    started = await asyncio.gather(*(start(pool, base, replicas) for _ in range(4)))
    sockets = {listeners.socket for listeners in started}
    assert sockets == {slot_socket(base, number) for number in range(4)}
    for socket in sockets:
        assert socket is not None and await answers(socket)


async def test_a_killed_replicas_slot_is_free_again_and_its_dead_socket_replaced(
    pool: Pool, base: Path, replicas: list[AuthListeners]
) -> None:
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLDER, str(base),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and (await holder.stdout.readline()).strip() == b"0"
        assert take_slot(base, slots=1) is None  # held by a living replica
        holder.send_signal(signal.SIGKILL)
        await asyncio.wait_for(holder.wait(), 10)
    finally:
        if holder.returncode is None:
            holder.kill()
    assert slot_socket(base, 0).exists()  # left behind: nobody answers on it
    assert not await _connects(slot_socket(base, 0))

    taken = await start(pool, base, replicas)
    assert taken.socket == slot_socket(base, 0)
    assert await answers(slot_socket(base, 0))


async def _connects(socket: Path) -> bool:
    try:
        _, writer = await asyncio.open_unix_connection(str(socket))
    except OSError:
        return False
    writer.close()
    return True
