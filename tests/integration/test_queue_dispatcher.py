"""The dispatcher end to end in one process: real PostgreSQL, real LISTEN hub, the
simulated runner (observed, so tests can wait on a run's start and stop events)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest

from tests.support.conditions import until
from tests.support.hub import running_hub
from tests.support.towers import cancel_job, insert_job
from tower.db.embedded import LocalPostgres
from tower.db.notify import NotifyHub
from tower.db.pool import Pool
from tower.execution.runner import ClaimedJob, Output, RunOutcome
from tower.execution.simulated import SimulatedRunner
from tower.observability.metrics import TowerMetrics
from tower.queue.dispatcher import Dispatcher
from tower.settings import Settings

DEADLINE = 15.0  # a bound on waiting for an event, never an expectation of speed


class ObservedRunner:
    """The simulated runner, with an event per job for its start and its cancellation."""

    def __init__(self) -> None:
        self._inner = SimulatedRunner()
        self.started: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.cancelled: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.running = 0
        self.peak = 0

    async def run(self, job: ClaimedJob, output: Output) -> RunOutcome:
        self.running += 1
        self.peak = max(self.peak, self.running)
        self.started[job.job_id].set()
        try:
            return await self._inner.run(job, output)
        except asyncio.CancelledError:
            self.cancelled[job.job_id].set()
            raise
        finally:
            self.running -= 1

    async def close(self) -> None:
        await self._inner.close()


class CrashingRunner(ObservedRunner):
    async def run(self, job: ClaimedJob, output: Output) -> RunOutcome:
        raise RuntimeError("runner bug")


@pytest.fixture
async def hub(database_url: str) -> AsyncIterator[NotifyHub]:
    async with running_hub(database_url) as hub:
        yield hub


@pytest.fixture
def runner() -> ObservedRunner:
    return ObservedRunner()


DispatcherFactory = Callable[..., Awaitable[Dispatcher]]


@pytest.fixture
async def dispatcher(
    database_url: str, pool: Pool, hub: NotifyHub, runner: ObservedRunner
) -> AsyncIterator[DispatcherFactory]:
    """Start a dispatcher with the given settings; stopped when the test ends."""
    started: list[Dispatcher] = []

    async def start(
        runner_: ObservedRunner = runner, metrics: TowerMetrics | None = None, **settings: Any
    ) -> Dispatcher:
        defaults = {
            "lease_seconds": 30,
            "poll_interval": 60,
            "max_concurrent_jobs": 4,
            "shutdown_grace_seconds": 0,
        }
        config = Settings(database_url=database_url, **{**defaults, **settings})
        dispatcher = Dispatcher(config, pool, hub, runner_, "replica-1", metrics)
        await dispatcher.start()
        started.append(dispatcher)
        return dispatcher

    yield start
    for dispatcher in started:
        await dispatcher.stop()


async def _wait_finished(hub: NotifyHub, db: Any, job_id: str) -> dict[str, Any]:
    """Subscribe, then re-read the row, so an early notification is not missed."""
    with hub.finished_event(job_id) as finished:
        async with asyncio.timeout(DEADLINE):
            while True:
                row = dict(await db.fetchrow("SELECT * FROM jobs WHERE job_id = $1", job_id))
                if row["status"] in ("completed", "failed", "cancelled"):
                    return row
                await finished.wait()
                finished.clear()


@asynccontextmanager
async def _deadline() -> AsyncIterator[None]:
    async with asyncio.timeout(DEADLINE):
        yield


async def _row(db: Any, job_id: str) -> dict[str, Any]:
    return dict(await db.fetchrow("SELECT * FROM jobs WHERE job_id = $1", job_id))


async def test_a_job_runs_to_completion(db: Any, hub: NotifyHub, dispatcher: Any) -> None:
    await dispatcher()
    job_id = await insert_job(db, "print hello\nprint world")

    row = await _wait_finished(hub, db, job_id)

    assert (row["status"], row["exit_code"], row["result"]) == ("completed", 0, "hello\nworld")
    assert (row["attempt"], row["failure_reason"], row["error"]) == (1, None, None)
    assert row["duration_ms"] is not None and row["finished_at"] is not None
    assert (row["lease_owner"], row["lease_token"], row["lease_until"]) == (None, None, None)


@pytest.mark.parametrize(
    ("prompt", "exit_code", "reason", "error"),
    [
        ("print oops\nexit 3", 3, "error", "oops"),
        ("print slow\nfail timeout", None, "timeout", "slow"),
    ],
)
async def test_failures_are_recorded(
    db: Any, hub: NotifyHub, dispatcher: Any, prompt: str, exit_code: Any, reason: str, error: str
) -> None:
    await dispatcher()
    job_id = await insert_job(db, prompt)

    row = await _wait_finished(hub, db, job_id)

    assert (row["status"], row["exit_code"]) == ("failed", exit_code)
    assert (row["failure_reason"], row["error"]) == (reason, error)


async def test_a_runner_crash_fails_the_job(db: Any, hub: NotifyHub, dispatcher: Any) -> None:
    await dispatcher(CrashingRunner())
    job_id = await insert_job(db, "print x")

    row = await _wait_finished(hub, db, job_id)

    assert (row["status"], row["failure_reason"]) == ("failed", "error")
    assert "runner bug" in row["error"]


async def test_a_notification_wakes_an_idle_dispatcher(
    db: Any, hub: NotifyHub, dispatcher: Any
) -> None:
    # The poll fallback is a minute away: only the NOTIFY can start this job in time.
    await dispatcher(poll_interval=60)
    job_id = await insert_job(db, "print x")

    assert (await _wait_finished(hub, db, job_id))["status"] == "completed"


# A job row written without its NOTIFY, as when the hint is lost.
INSERT_SILENTLY = """
INSERT INTO jobs (job_id, agent_id, engine, profile, request)
VALUES ($1, 'a', 'claude-code', 'default', '{"prompt": "print silent"}'::jsonb)
"""


async def test_a_job_whose_notification_was_lost_is_found_by_the_poll(
    db: Any, hub: NotifyHub, dispatcher: Any, runner: ObservedRunner
) -> None:
    # First a notified job, so the dispatcher has claimed and seen the queue empty.
    await dispatcher(poll_interval=0.2)
    await _wait_finished(hub, db, await insert_job(db, "print first"))
    silent = "a-5113e0700000"
    await db.execute(INSERT_SILENTLY, silent)

    assert (await _wait_finished(hub, db, silent))["result"] == "silent"


async def test_capacity_is_never_exceeded(
    db: Any, hub: NotifyHub, dispatcher: Any, runner: ObservedRunner
) -> None:
    jobs = [await insert_job(db, "sleep 0.05") for _ in range(7)]
    await dispatcher(max_concurrent_jobs=2)

    rows = [await _wait_finished(hub, db, job_id) for job_id in jobs]

    assert {row["status"] for row in rows} == {"completed"}
    assert runner.peak == 2


async def test_cancel_stops_the_running_job_and_the_row_stays_cancelled(
    db: Any, hub: NotifyHub, dispatcher: Any, runner: ObservedRunner
) -> None:
    await dispatcher(max_concurrent_jobs=1)
    job_id = await insert_job(db, "sleep 60\nprint never")
    async with _deadline():
        await runner.started[job_id].wait()

    assert await cancel_job(db, job_id)
    async with _deadline():
        await runner.cancelled[job_id].wait()

    # The single slot is free again only after the cancelled job's supervisor is done.
    follower = await insert_job(db, "print next")
    assert (await _wait_finished(hub, db, follower))["status"] == "completed"
    row = await _row(db, job_id)
    assert (row["status"], row["result"], row["exit_code"]) == ("cancelled", None, None)


async def test_a_lost_lease_stops_the_run(
    db: Any, hub: NotifyHub, dispatcher: Any, runner: ObservedRunner
) -> None:
    await dispatcher(lease_seconds=1, max_concurrent_jobs=1)
    job_id = await insert_job(db, "sleep 60")
    async with _deadline():
        await runner.started[job_id].wait()

    # As if the reaper requeued it and another replica claimed it.
    await db.execute(
        "UPDATE jobs SET lease_owner = 'replica-2', lease_token = gen_random_uuid(),"
        " attempt = attempt + 1 WHERE job_id = $1",
        job_id,
    )
    async with _deadline():
        await runner.cancelled[job_id].wait()

    row = await _row(db, job_id)
    assert (row["status"], row["lease_owner"], row["attempt"]) == ("running", "replica-2", 2)


@pytest.mark.parametrize(("max_attempts", "status"), [(2, "pending"), (1, "failed")])
async def test_stop_hands_running_jobs_back(
    db: Any,
    hub: NotifyHub,
    dispatcher: Any,
    runner: ObservedRunner,
    max_attempts: int,
    status: str,
) -> None:
    stopping = await dispatcher()
    job_id = await insert_job(db, "sleep 60", max_attempts=max_attempts)
    async with _deadline():
        await runner.started[job_id].wait()

    await stopping.stop()

    assert runner.cancelled[job_id].is_set()
    row = await _row(db, job_id)
    assert (row["status"], row["attempt"], row["lease_token"]) == (status, 1, None)
    if status == "failed":
        assert row["failure_reason"] == "tower_lost"


async def test_stop_lets_running_jobs_finish_within_the_grace(
    db: Any, dispatcher: Any, runner: ObservedRunner
) -> None:
    stopping = await dispatcher(shutdown_grace_seconds=DEADLINE)
    running = await insert_job(db, "sleep 0.3\nprint done")
    async with _deadline():
        await runner.started[running].wait()

    stopping.drain()
    queued = await insert_job(db, "print never claimed here")
    async with _deadline():
        await stopping.stop()

    assert not runner.cancelled[running].is_set()
    row = await _row(db, running)
    assert (row["status"], row["result"], row["ran_by"]) == ("completed", "done", "replica-1")
    row = await _row(db, queued)
    assert (row["status"], row["attempt"], row["ran_by"]) == ("pending", 0, None)


async def test_a_job_outliving_the_grace_is_handed_back(
    db: Any, dispatcher: Any, runner: ObservedRunner
) -> None:
    stopping = await dispatcher(shutdown_grace_seconds=0.2)
    job_id = await insert_job(db, "sleep 60", max_attempts=2)
    async with _deadline():
        await runner.started[job_id].wait()

    async with _deadline():
        await stopping.stop()

    assert runner.cancelled[job_id].is_set()
    row = await _row(db, job_id)
    assert (row["status"], row["attempt"], row["lease_token"]) == ("pending", 1, None)


async def test_a_run_outlives_a_lease_it_cannot_renew_and_renews_it_on_reconnect(
    db: Any,
    dispatcher: Any,
    runner: ObservedRunner,
    database_url: str,
    pg_server: LocalPostgres,
) -> None:
    await dispatcher(lease_seconds=1, max_concurrent_jobs=1)
    job_id = await insert_job(db, "sleep 60")
    async with _deadline():
        await runner.started[job_id].wait()

    name = database_url.rsplit("/", 1)[1]
    # The test's own eyes on the row: the one connection the cut spares.
    observer = await asyncpg.connect(database_url)
    admin = await asyncpg.connect(pg_server.url)
    try:
        # The database vanishes for this replica: no connection old or new gets through.
        await admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> $2",
            name,
            observer.get_server_pid(),
        )
        # Two leases without a renewal: long past the point where the lease lapsed.
        await _until_row(observer, job_id, "lease_until < now() - interval '1 second'")
        assert not runner.cancelled[job_id].is_set()
    finally:
        await admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
        await admin.close()
    try:
        # Nothing reaped it meanwhile: back, the owner renews the lease it still holds.
        await _until_row(observer, job_id, "lease_until > now()")
        row = await observer.fetchrow(
            "SELECT status, lease_owner FROM jobs WHERE job_id = $1", job_id
        )
    finally:
        await observer.close()
    assert tuple(row) == ("running", "replica-1")
    assert not runner.cancelled[job_id].is_set()


async def _until_row(connection: Any, job_id: str, condition: str) -> None:
    """Until the job's row meets `condition` (checked often, bounded by DEADLINE)."""
    query = f"SELECT {condition} FROM jobs WHERE job_id = $1"
    async with _deadline():
        while True:
            if await connection.fetchval(query, job_id):
                return
            await asyncio.sleep(0.05)


async def test_a_claim_that_passed_over_a_held_tenant_claims_again_before_the_poll(
    db: Any, database_url: str, hub: NotifyHub, runner: ObservedRunner, dispatcher: Any
) -> None:
    # Every tenant has a running quota, so a claim locks the tenant's row; another
    # connection holds it, as another replica's claim would for a moment.
    metrics = TowerMetrics("replica-1")
    await dispatcher(metrics=metrics, tenant_max_running=3)
    other = await asyncpg.connect(database_url)
    try:
        async with other.transaction():
            await other.execute("SELECT 1 FROM tenants WHERE name = 'default' FOR NO KEY UPDATE")
            job_id = await insert_job(db, "print ran")
            await until(lambda: _contended(metrics) >= 1, "a claim passed the held tenant over")
            assert not runner.started[job_id].is_set()
        # Released: the job is claimed well before the next poll, 60 s away.
        row = await _wait_finished(hub, db, job_id)
    finally:
        await other.close()
    assert row["status"] == "completed"


def _contended(metrics: TowerMetrics) -> float:
    return metrics.registry.get_sample_value("tower_claims_contended_total") or 0.0
