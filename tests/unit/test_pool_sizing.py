"""How big the warm pool wants to be, and how many jobs a replica runs at once, when the
operator leaves them to tower (the arithmetic only; tests/e2e/test_pool_elastic.py runs it)."""

from __future__ import annotations

from tower.execution.pool.warm import (
    AUTO_POOL_MAX,
    WARM_WORKER_BYTES,
    PeakDemand,
    pool_bounds,
)
from tower.queue.capacity import JOBS_PER_CORE, Machine, fitted, job_memory
from tower.settings import Settings

GIB = 1 << 30


def test_a_peak_is_held_while_a_burst_drains_and_for_the_window_after() -> None:
    peak = PeakDemand(window=10)
    assert peak.note(50, now=0) == 50
    assert peak.note(30, now=5) == 50  # draining: at least half of the peak
    assert peak.note(10, now=12) == 50  # last seen at half or more at 5: held until 15
    assert peak.note(0, now=14) == 50
    assert peak.note(0, now=16) == 0  # a quiet window: given back


def test_a_trickle_does_not_hold_an_old_peak() -> None:
    peak = PeakDemand(window=10)
    peak.note(40, now=0)
    for now in range(1, 12):
        peak.note(1, now=now)
    assert peak.note(1, now=12) == 1


def test_demand_rising_again_renews_the_hold() -> None:
    peak = PeakDemand(window=10)
    peak.note(20, now=0)
    peak.note(2, now=1)
    assert peak.note(15, now=9) == 20  # back above half: held again
    assert peak.note(0, now=18) == 20
    assert peak.note(0, now=20) == 0


def test_pool_max_is_fitted_to_the_hosts_memory_when_unset() -> None:
    settings = Settings(pool_min=2)
    assert pool_bounds(settings, host_memory=4 * GIB) == (2, int(0.4 * GIB) // WARM_WORKER_BYTES)
    assert pool_bounds(settings, host_memory=1024 * GIB) == (2, AUTO_POOL_MAX)
    assert pool_bounds(settings, host_memory=0) == (2, 2)  # never below the floor


def test_an_operators_pool_max_is_kept() -> None:
    assert pool_bounds(Settings(pool_min=1, pool_max=5), host_memory=GIB) == (1, 5)
    assert pool_bounds(Settings(pool_min=3, pool_max=0), host_memory=GIB) == (3, 3)
    assert pool_bounds(Settings(pool_size=4), host_memory=0) == (4, 4)  # the old name


def test_concurrency_follows_the_smaller_of_cores_and_memory() -> None:
    settings = Settings(worker_mem_limit="2g")
    by_cores = fitted(settings, Machine(cores=2, memory=64 * GIB), [])
    assert (by_cores.jobs, by_cores.fitted) == (2 * JOBS_PER_CORE, True)
    by_memory = fitted(settings, Machine(cores=32, memory=8 * GIB), [])
    assert by_memory.jobs == 3  # 75 % of 8 GiB in 2 GiB jobs


def test_the_largest_profile_limit_counts_within_the_operators_ceiling() -> None:
    settings = Settings(worker_mem_limit="1g", worker_max_memory="4g")
    assert job_memory(settings, [None, "512m", "3g"]) == 3 * GIB
    assert job_memory(settings, ["16g"]) == 4 * GIB
    few = fitted(settings, Machine(cores=32, memory=16 * GIB), ["16g"])
    assert few.jobs == 3


def test_a_set_max_concurrent_jobs_wins() -> None:
    chosen = fitted(Settings(max_concurrent_jobs=5), Machine(cores=1, memory=GIB), [])
    assert (chosen.jobs, chosen.fitted) == (5, False)


def test_at_least_one_job() -> None:
    assert fitted(Settings(), Machine(cores=1, memory=GIB // 4), []).jobs == 1
