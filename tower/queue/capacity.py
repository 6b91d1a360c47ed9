"""How many jobs a replica runs at once when MAX_CONCURRENT_JOBS is 0: fitted to the
machine tower runs on (all-in-one and compose put the Docker host there too).

Two bounds, the lower wins: cores, JOBS_PER_CORE each, because an agent spends most of its
run waiting on its LLM (a dry run or a build is held to its own --cpus limit anyway); and
memory, MEMORY_SHARE of it divided by the largest memory limit a job may get (the
profiles' limits and WORKER_MEM_LIMIT, each clamped to WORKER_MAX_MEMORY), so that jobs
at their limits never take the machine's last memory.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass

from tower.settings import RANGES, Settings, memory_bytes

log = logging.getLogger(__name__)

JOBS_PER_CORE = 4
MEMORY_SHARE = 0.75


@dataclass(frozen=True)
class Machine:
    cores: int
    memory: int  # bytes


@dataclass(frozen=True)
class Concurrency:
    jobs: int
    fitted: bool  # False when MAX_CONCURRENT_JOBS set it
    why: str


def this_machine() -> Machine:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return Machine(cores or 1, memory)


def job_memory(settings: Settings, profile_limits: Iterable[str | None]) -> int:
    """The most memory one job may be given, in bytes."""
    ceiling = memory_bytes(settings.worker_max_memory) or 0
    limits = [settings.worker_mem_limit, *(limit for limit in profile_limits if limit)]
    sizes = [memory_bytes(limit) or ceiling for limit in limits]
    return max(1, min(max(sizes), ceiling or max(sizes)))


def fitted(
    settings: Settings, machine: Machine, profile_limits: Iterable[str | None]
) -> Concurrency:
    if settings.max_concurrent_jobs:
        return Concurrency(int(settings.max_concurrent_jobs), False, "MAX_CONCURRENT_JOBS")
    per_job = job_memory(settings, profile_limits)
    by_cores = machine.cores * JOBS_PER_CORE
    by_memory = int(machine.memory * MEMORY_SHARE) // per_job
    jobs = int(min(max(min(by_cores, by_memory), 1), RANGES["max_concurrent_jobs"][1]))
    why = (
        f"{machine.cores} cores x {JOBS_PER_CORE} = {by_cores}; "
        f"{MEMORY_SHARE:.0%} of {machine.memory >> 20} MiB / {per_job >> 20} MiB a job "
        f"= {by_memory}"
    )
    return Concurrency(jobs, True, why)


def resolve(
    settings: Settings, profile_limits: Iterable[str | None]
) -> tuple[Settings, Concurrency]:
    """Settings with a concrete MAX_CONCURRENT_JOBS, and how it was chosen (logged)."""
    chosen = fitted(settings, this_machine(), profile_limits)
    if chosen.fitted:
        log.info(
            "running up to %s jobs at once, fitted to this machine (%s)", chosen.jobs, chosen.why
        )
    else:
        log.info("running up to %s jobs at once (MAX_CONCURRENT_JOBS)", chosen.jobs)
    return settings.model_copy(update={"max_concurrent_jobs": chosen.jobs}), chosen
