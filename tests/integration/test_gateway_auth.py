"""Gateway tokens through the real queue statements and tower's real auth listeners.

Tokens are minted by the claim, checked over the Unix socket (all-in-one) and TCP
(compose) the gateway uses, and die with every write that ends an attempt.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.towers import insert_job
from tower.db.embedded import free_port
from tower.db.pool import Pool
from tower.execution.runner import ClaimedJob
from tower.gateway import tokens
from tower.gateway.listener import AUTH_PATH, JOB_HEADER, REFUSED_HEADER, AuthListeners
from tower.jobs.service import cancel_job
from tower.observability.metrics import TowerMetrics
from tower.queue import queries
from tower.settings import Settings

LEASE = 30.0
DONE = queries.Finish("completed", 0, "ok", None, None, None, 5)


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    # Short: a Unix socket's path must fit in 107 bytes.
    path = Path(tempfile.mkdtemp(prefix="pga-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def listeners(pool: Pool, socket_dir: Path) -> AsyncIterator[tuple[Path, int]]:
    port = free_port()
    settings = Settings(
        gateway_auth_socket=str(socket_dir / "auth.sock"),
        gateway_auth_listen=f"127.0.0.1:{port}",
    )
    started = await AuthListeners.start(settings, pool, unix_socket=True)
    socket = started.socket
    assert socket == socket_dir / "auth-0.sock"  # the first replica's slot
    try:
        yield socket, port
    finally:
        await started.stop()
    assert not socket.exists()


async def ask(socket: Path, token: str) -> httpx.Response:
    transport = httpx.AsyncHTTPTransport(uds=str(socket))
    async with httpx.AsyncClient(transport=transport, base_url="http://tower") as client:
        return await client.get(AUTH_PATH, headers={"X-Gateway-Token": token})


async def claim(db: Any, count: int = 1) -> list[ClaimedJob]:
    for index in range(count):
        await insert_job(db, f"job {index}")
    return await queries.claim(db, "owner", LEASE, count)


async def stored_hash(db: Any, job_id: str) -> str | None:
    value: str | None = await db.fetchval(
        "SELECT gateway_token_sha256 FROM jobs WHERE job_id = $1", job_id
    )
    return value


async def test_each_claimed_job_gets_its_own_token_stored_only_as_its_hash(db: Any) -> None:
    jobs = await claim(db, 5)
    assert len({job.gateway_token for job in jobs}) == 5
    for job in jobs:
        assert tokens.plausible(job.gateway_token)
        assert await stored_hash(db, job.job_id) == tokens.digest(job.gateway_token)
        assert job.gateway_token not in repr(job)
    row = await db.fetchrow("SELECT * FROM jobs WHERE job_id = $1", jobs[0].job_id)
    assert jobs[0].gateway_token not in str(dict(row))


async def test_a_running_jobs_token_passes_on_both_listeners_and_names_the_job(
    db: Any, listeners: tuple[Path, int]
) -> None:
    socket, port = listeners
    (job,) = await claim(db)
    answer = await ask(socket, job.gateway_token)
    assert answer.status_code == 200
    assert answer.headers[JOB_HEADER] == job.job_id
    async with httpx.AsyncClient() as client:
        over_tcp = await client.get(
            f"http://127.0.0.1:{port}{AUTH_PATH}", headers={"X-Gateway-Token": job.gateway_token}
        )
    assert (over_tcp.status_code, over_tcp.headers[JOB_HEADER]) == (200, job.job_id)


async def test_unknown_empty_and_malformed_tokens_are_refused(
    db: Any, listeners: tuple[Path, int]
) -> None:
    socket, _ = listeners
    await claim(db)
    for token in ("", tokens.mint(), "x" * 300, "' OR 1=1 --" + "a" * 40):
        answer = await ask(socket, token)
        assert answer.status_code == 401, token
        assert JOB_HEADER not in answer.headers


async def test_the_token_dies_with_every_end_of_its_attempt(
    db: Any, pool: Pool, listeners: tuple[Path, int]
) -> None:
    socket, _ = listeners
    finished, cancelled, released, reaped = await claim(db, 4)
    for job in (finished, cancelled, released, reaped):
        assert (await ask(socket, job.gateway_token)).status_code == 200

    assert await queries.finish(db, finished.job_id, finished.lease_token, DONE)
    await cancel_job(pool, TowerMetrics("test"), cancelled.job_id, None)
    assert await queries.release(db, released.job_id, released.lease_token) == "failed"
    await db.execute(
        "UPDATE jobs SET lease_until = now() - interval '1 s' WHERE job_id = $1", reaped.job_id
    )
    assert reaped.job_id in await queries.reap(db)

    for job in (finished, cancelled, released, reaped):
        assert await stored_hash(db, job.job_id) is None, job.job_id
        assert (await ask(socket, job.gateway_token)).status_code == 401, job.job_id


async def test_a_retried_job_gets_a_new_token_and_the_old_one_is_dead(
    db: Any, listeners: tuple[Path, int]
) -> None:
    socket, _ = listeners
    await insert_job(db, "retry me", max_attempts=2)
    (first,) = await queries.claim(db, "owner", LEASE, 1)
    assert await queries.release(db, first.job_id, first.lease_token) == "pending"
    (second,) = await queries.claim(db, "owner", LEASE, 1)
    assert second.job_id == first.job_id and second.attempt == 2
    assert second.gateway_token != first.gateway_token
    assert (await ask(socket, first.gateway_token)).status_code == 401
    assert (await ask(socket, second.gateway_token)).status_code == 200


async def test_the_socket_is_open_to_the_gateways_user(listeners: tuple[Path, int]) -> None:
    socket, _ = listeners
    assert socket.stat().st_mode & 0o777 == 0o666
    assert socket.parent.stat().st_mode & 0o777 == 0o755


async def test_a_refused_call_of_a_running_job_gets_403_and_is_counted_by_provider(
    db: Any, pool: Pool, socket_dir: Path
) -> None:
    # The gateway refuses a non-inference path itself, and asks with the provider named.
    counted: list[str] = []
    settings = Settings(gateway_auth_socket=str(socket_dir / "auth.sock"))
    started = await AuthListeners.start(settings, pool, unix_socket=True, refused=counted.append)
    try:
        assert started.socket is not None
        (job,) = await claim(db)

        async def refused(token: str, provider: str) -> httpx.Response:
            transport = httpx.AsyncHTTPTransport(uds=str(started.socket))
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                headers = {"X-Gateway-Token": token, REFUSED_HEADER: provider}
                return await client.get(AUTH_PATH, headers=headers)

        for provider in ("openai", "gemini", "anthropic", "openai"):
            answer = await refused(job.gateway_token, provider)
            assert answer.status_code == 403
            assert answer.headers[JOB_HEADER] == job.job_id
        # Whatever the header says, the label stays one of a few.
        assert (await refused(job.gateway_token, "x" * 200)).status_code == 403
        # Another token is refused as always, and its call counts for nothing.
        assert (await refused(tokens.mint(), "openai")).status_code == 401
        assert counted == ["openai", "gemini", "anthropic", "openai", "other"]
        # Without the header, the same token passes: the check itself is unchanged.
        assert (await ask(started.socket, job.gateway_token)).status_code == 200
    finally:
        await started.stop()
