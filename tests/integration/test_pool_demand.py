"""What the elastic pool reads as demand (tower/execution/pool/queries.py, DEMAND), on real
PostgreSQL: jobs queued and running, or, when more, the jobs submitted in the last
ARRIVALS_SECONDS whatever became of them (a burst's first jobs end on warm workers
before its last ones are submitted)."""

from __future__ import annotations

from typing import Any

from tests.support.towers import insert_job
from tower.db.pool import Pool
from tower.execution.pool import queries as q

KEY = q.PoolKey("unix:///demand-test.sock", "sha256:demand", "hash")


async def test_a_burst_counts_whole_though_its_first_jobs_are_over(pool: Pool, db: Any) -> None:
    ids = [await insert_job(db, "burst") for _ in range(5)]
    await db.execute(
        "UPDATE jobs SET status = 'completed', finished_at = now() WHERE job_id = ANY($1)",
        ids[:3],
    )
    demand = await q.demand(pool, KEY)
    assert (demand.pending, demand.running, demand.arrived) == (2, 0, 5)
    assert demand.jobs == 5


async def test_arrivals_older_than_the_window_no_longer_count(pool: Pool, db: Any) -> None:
    ids = [await insert_job(db, "old") for _ in range(4)]
    await db.execute(
        "UPDATE jobs SET created_at = now() - make_interval(secs => $2) WHERE job_id = ANY($1)",
        ids,
        q.ARRIVALS_SECONDS + 1,
    )
    await db.execute("UPDATE jobs SET status = 'running' WHERE job_id = $1", ids[0])
    demand = await q.demand(pool, KEY)
    assert (demand.pending, demand.running, demand.arrived) == (3, 1, 0)
    assert demand.jobs == 4
