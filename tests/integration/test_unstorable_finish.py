"""A finish the database refuses (a non-finite number in its usage, a NUL in its result)
fails once and ends the job as failed, saying why: never a 90 s retry loop that drops
the result and leaves the job to be reaped and run again."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from tests.support.hub import running_hub
from tests.support.towers import insert_job
from tests.unit.test_execution_outcome import CLAUDE_JSON, outcome, worker_output
from tower.db.notify import NotifyHub
from tower.db.pool import Pool
from tower.db.writes import write_with_retry
from tower.execution.runner import ClaimedJob, Output, RunOutcome
from tower.queue import queries
from tower.queue.dispatcher import Dispatcher
from tower.settings import Settings

LEASE = 30.0
# Far less than the finish's retry window (3 leases, at least 60 s) the old code spent.
DEADLINE = 15.0


async def _claim_one(db: Any) -> ClaimedJob:
    await insert_job(db, "print x")
    (job,) = await queries.claim(db, "owner", LEASE, 1)
    return job


async def _row(db: Any, job_id: str) -> dict[str, Any]:
    return dict(await db.fetchrow("SELECT * FROM jobs WHERE job_id = $1", job_id))


def _finish(usage: dict[str, Any] | None, result: str = "ok") -> queries.Finish:
    return queries.Finish("completed", 0, result, None, None, usage, 12)


async def test_an_engine_reporting_an_infinite_cost_finishes_with_its_result(db: Any) -> None:
    stdout = json.dumps(CLAUDE_JSON).replace("0.0123", "Infinity").encode()
    parsed = outcome(worker_output(stdout))
    job = await _claim_one(db)

    assert await queries.finish(db, job.job_id, job.lease_token, _finish(parsed.usage))

    row = await _row(db, job.job_id)
    assert (row["status"], row["result"]) == ("completed", "ok")
    assert row["usage"] == {"input_tokens": 120, "output_tokens": 45, "cost_usd": None}


async def test_a_non_finite_usage_is_refused_by_the_encoder_and_not_retried(db: Any) -> None:
    job = await _claim_one(db)
    before = await _row(db, job.job_id)
    calls = 0

    async def write() -> bool:
        nonlocal calls
        calls += 1
        bad = _finish({"cost_usd": float("nan")})
        return await queries.finish(db, job.job_id, job.lease_token, bad)

    started = time.monotonic()
    with pytest.raises(asyncpg.DataError, match="JSON compliant"):
        await write_with_retry(write, deadline=started + DEADLINE)

    assert calls == 1 and time.monotonic() - started < DEADLINE / 2
    assert await _row(db, job.job_id) == before


# --- the dispatcher ----------------------------------------------------------------------


class FixedRunner:
    """Every job ends with the same outcome."""

    def __init__(self, outcome: RunOutcome) -> None:
        self._outcome = outcome

    async def run(self, job: ClaimedJob, output: Output) -> RunOutcome:
        return self._outcome

    async def close(self) -> None:
        return None


@pytest.fixture
async def hub(database_url: str) -> AsyncIterator[NotifyHub]:
    async with running_hub(database_url) as hub:
        yield hub


async def _run_one(
    database_url: str, pool: Pool, hub: NotifyHub, db: Any, run: RunOutcome
) -> dict[str, Any]:
    settings = Settings(
        database_url=database_url,
        lease_seconds=30,
        poll_interval=60,
        max_concurrent_jobs=1,
        shutdown_grace_seconds=0,
    )
    dispatcher = Dispatcher(settings, pool, hub, FixedRunner(run), "replica-1")  # type: ignore[arg-type]
    job_id = await insert_job(db, "print x")
    try:
        with hub.finished_event(job_id) as finished:
            await dispatcher.start()
            async with asyncio.timeout(DEADLINE):
                while (row := await _row(db, job_id))["status"] not in ("completed", "failed"):
                    await finished.wait()
                    finished.clear()
    finally:
        await dispatcher.stop()
    return row


@pytest.mark.parametrize(
    ("run", "refusal"),
    [
        (RunOutcome(True, 0, "done", usage={"cost_usd": float("inf")}), "JSON compliant"),
        (RunOutcome(True, 0, "nul \x00 byte", usage={"cost_usd": 0.5}), "0x00"),
    ],
    ids=["infinite-cost", "nul-in-result"],
)
async def test_a_refused_finish_fails_the_job_saying_why(
    database_url: str, pool: Pool, hub: NotifyHub, db: Any, run: RunOutcome, refusal: str
) -> None:
    row = await _run_one(database_url, pool, hub, db, run)

    assert (row["status"], row["failure_reason"], row["exit_code"]) == ("failed", "error", 0)
    assert "completed outcome could not be stored" in row["error"]
    assert refusal in row["error"]
    assert (row["result"], row["usage"], row["attempt"]) == (None, None, 1)
    assert (row["lease_owner"], row["lease_token"]) == (None, None)
