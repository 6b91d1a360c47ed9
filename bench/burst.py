"""Bursts and sustained load: dry-run jobs through one tower against bare `docker run`.

A benchmark, not a test: it prints figures and ratios from one run, never fails on them.
Run from the repository root, with Docker up and the worker image built:
    .venv/bin/python bench/burst.py [--jobs 200] [--rounds 3] [--burst 50] [--gap 60]
                                    [--idle 90] [--only fixed|elastic]

1. Bare: hardened `docker run --rm -i` dry-run jobs of the worker image (bench/nonet.py's
   command line), RUNS of them at each concurrency of --concurrency, twice: with
   `--network none` and the gateway's socket volume (how tower runs workers) and on an
   internal bridge (how it ran them before). The best jobs/min of each is the baseline.
2. Through tower (`parpaing serve` of this checkout, with small worker limits and
   POOL_IDLE_SECONDS=--idle), twice: "fixed", as the defaults were before issue 17 (a
   pool of 2, 4 jobs at once), and "elastic", today's defaults (the pool follows demand
   up to POOL_MAX, concurrency fitted to the machine):
   - sustained, --rounds times: --jobs dry runs submitted at once; jobs/min to the last
     terminal record, and to the moment every used container is removed too. The bare
     loop without network (--jobs dry runs at its best concurrency) runs before the
     first round and after each, alternating with them, always with the pool at its
     floor (after a round it grows to the round's peak; the loop waits until it has
     given that back, POOL_IDLE_SECONDS later): a round's ratio is its rate over the mean
     of the bare loops just before and just after it (on a shared machine the bare rate
     moves by a sixth between minutes), and the figure is the median of the rounds';
   - bursts: once the pool is back at its floor, a burst of --burst; --gap seconds
     later, a second one: how long each took, and how many warm workers were ready
     when the second began; then how long until the pool is back at its floor;
   - where each job's time went: the mean of every phase of tower_job_phase_seconds
     over the sustained run and over the second burst.
Targets (issue 17): sustained (the median round) >= 0.9 x the bare loop with no network
around it; a second burst of 50 all done in under 3 s; the pool back at POOL_MIN after
POOL_IDLE_SECONDS.
"""

# ruff: noqa: E402  (sys.path is repaired below, before the imports that need it)
from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

import argparse
import asyncio
import contextlib
import itertools
import logging
import re
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg
import docker
import httpx

from bench.e2e import database, until_serving, wait
from bench.nonet import (
    DRY_RUN,
    bare_setup,
    dry_run_frame,
    hardened,
    remove_scope,
    serving,
)
from tower.db.embedded import LocalPostgres
from tower.execution import protocol
from tower.settings import Settings

ROOT = HERE.parent
SUSTAINED_TARGET = 0.9
SECOND_BURST_TARGET = 3.0
PHASE = re.compile(r'^tower_job_phase_seconds_(sum|count)\{phase="(\w+)"\} (\S+)$', re.M)
READY = "SELECT count(*) FROM pool_slots WHERE status IN ('ready', 'starting')"
CONTAINERS = "SELECT count(*) FROM pool_slots"
SETTLING = "SELECT count(*) FROM pool_slots WHERE status IN ('busy', 'starting')"
SETTLE_DEADLINE = 600.0
# Where each tower round logs (kept after the run, for a look at what it did).
LOGS = Path(tempfile.gettempdir()) / "parpaing-bench-burst"
# The defaults before issue 17.
FIXED = {"POOL_MIN": "2", "POOL_MAX": "2", "MAX_CONCURRENT_JOBS": "4"}


# --- 1. bare docker run ------------------------------------------------------------------


def bare_loop(argv: list[str], runs: int, concurrency: int) -> float:
    """Jobs per minute of `runs` dry runs, `concurrency` at a time."""
    frame = dry_run_frame()

    def one(_: int) -> None:
        done = subprocess.run(argv, input=frame, capture_output=True, check=False)
        if done.returncode != 0 or protocol.OUTPUT_MARK not in done.stdout:
            raise RuntimeError(f"bare dry run failed: {done.stderr[-500:]!r}")

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as threads:
        list(threads.map(one, range(runs)))
    return runs / (time.perf_counter() - started) * 60


@dataclass
class Bare:
    """The bare loops' command lines and the best figures seen so far, by way."""

    argv: dict[str, list[str]]
    best: dict[str, float] = field(default_factory=lambda: {"none": 0.0, "bridge": 0.0})
    level: int = 4  # the concurrency of the best loop without network

    def survey(self, runs: int, levels: list[int]) -> None:
        """Each way at each concurrency: the best rate, and where `none` peaks."""
        for level in levels:
            for way, argv in self.argv.items():
                rate = bare_loop(argv, runs, level)
                print(f"  bare, {way:6}, {level} at once: {rate:5.0f} jobs/min")
                if rate > self.best[way]:
                    self.best[way] = rate
                    self.level = level if way == "none" else self.level

    def none_loop(self, runs: int) -> float:
        """`runs` dry runs without network at the best concurrency: the baseline that
        brackets a tower's sustained run, so both see the same machine."""
        rate = bare_loop(self.argv["none"], runs, self.level)
        self.best["none"] = max(self.best["none"], rate)
        print(f"  bare, none, {self.level} at once, {runs} jobs: {rate:5.0f} jobs/min", flush=True)
        return rate


@contextlib.contextmanager
def bare_ways(image: str) -> Iterator[Bare]:
    client = docker.from_env()
    try:
        with bare_setup(client, uuid.uuid4().hex[:8]) as (bridge, volume):
            socket = ["-v", f"{volume}:{protocol.GATEWAY_SOCKET_DIR}:ro"]
            yield Bare({
                "none": hardened(image, ["--network", "none", *socket]),
                "bridge": hardened(image, ["--network", bridge]),
            })  # fmt: skip
    finally:
        client.close()


# --- 2. through tower --------------------------------------------------------------------


@dataclass
class Phases:
    """tower_job_phase_seconds read from /metrics: (sum, count) by phase."""

    sums: dict[str, tuple[float, float]] = field(default_factory=dict)

    @classmethod
    async def read(cls, client: httpx.AsyncClient) -> Phases:
        text = (await client.get("/metrics")).text
        found: dict[str, list[float]] = {}
        for kind, phase, value in PHASE.findall(text):
            found.setdefault(phase, [0.0, 0.0])[0 if kind == "sum" else 1] = float(value)
        return cls({phase: (pair[0], pair[1]) for phase, pair in found.items()})

    def since(self, before: Phases) -> dict[str, tuple[float, float]]:
        out = {}
        for phase, (total, count) in self.sums.items():
            old_total, old_count = before.sums.get(phase, (0.0, 0.0))
            out[phase] = (total - old_total, count - old_count)
        return out


def report_phases(title: str, phases: dict[str, tuple[float, float]]) -> None:
    """Mean ms per job of each phase (over the jobs that ran it) and per-job total."""
    shown = []
    for phase, (total, count) in phases.items():
        if count:
            shown.append(f"{phase} {total / count * 1000:.0f}ms (x{count:.0f})")
    print(f"  {title}: " + ", ".join(shown), flush=True)


@dataclass(frozen=True)
class Burst:
    seconds: float
    per_job_p50: float


async def burst(client: httpx.AsyncClient, jobs: int) -> Burst:
    started = time.perf_counter()
    sent = await asyncio.gather(*(client.post("/jobs", json=DRY_RUN) for _ in range(jobs)))
    ids = [response.raise_for_status().json()["job_id"] for response in sent]
    records = await asyncio.gather(*(wait(client, job_id) for job_id in ids))
    seconds = time.perf_counter() - started
    failed = [r for r in records if r["status"] != "completed"]
    if failed:
        raise RuntimeError(f"{len(failed)} dry runs did not complete: {failed[0]}")
    spans = [_span(r) for r in records]
    return Burst(seconds, statistics.median(spans))


def _span(record: dict[str, object]) -> float:
    created = datetime.fromisoformat(str(record["created_at"]))
    finished = datetime.fromisoformat(str(record["finished_at"]))
    return (finished - created).total_seconds()


async def count(url: str, query: str) -> int:
    connection = await asyncpg.connect(url)
    try:
        value: int = await connection.fetchval(query)
        return value
    finally:
        await connection.close()


async def until(check: Callable[[], Awaitable[bool]], deadline: float = SETTLE_DEADLINE) -> float:
    """Seconds until `check` holds (polled: a benchmark reads the database, not events)."""
    started = time.perf_counter()
    while not await check():
        if time.perf_counter() - started > deadline:
            raise RuntimeError("the pool did not settle")
        await asyncio.sleep(0.25)
    return time.perf_counter() - started


@dataclass
class TowerFigures:
    # Jobs/min of each sustained round: to the last record, and to the last removal.
    sustained: list[float] = field(default_factory=list)
    sustained_clean: list[float] = field(default_factory=list)
    first: Burst | None = None
    second: Burst | None = None
    ready_before_second: int = 0
    back_to_floor: float = 0.0
    # The bare loop without network: before the first sustained round and after each.
    bare_around: list[float] = field(default_factory=list)

    def ratios(self) -> list[float]:
        """Each sustained round over the mean of the bare loops just before and after it."""
        around = [statistics.mean(pair) for pair in itertools.pairwise(self.bare_around)]
        return [rate / bare for rate, bare in zip(self.sustained, around, strict=False)]


async def tower_side(url: str, db: str, args: argparse.Namespace, bare: Bare) -> TowerFigures:
    figures = TowerFigures()
    floor = int(Settings().pool_min)
    at_floor = _at_most(db, READY, floor)
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        health = (await client.get("/health")).json()
        print(f"  concurrency (fitted): {health.get('max_concurrent_jobs')}")
        figures.bare_around.append(await asyncio.to_thread(bare.none_loop, args.jobs))
        for _ in range(args.rounds):
            await sustained_round(client, db, args, figures, floor)
            await until(at_floor)
            figures.bare_around.append(await asyncio.to_thread(bare.none_loop, args.jobs))
        await until(at_floor)
        figures.first = await burst(client, args.burst)
        await asyncio.sleep(args.gap)
        figures.ready_before_second = await count(db, READY)
        before = await Phases.read(client)
        figures.second = await burst(client, args.burst)
        report_phases("second burst", (await Phases.read(client)).since(before))
        figures.back_to_floor = await until(at_floor)
    return figures


async def sustained_round(
    client: httpx.AsyncClient,
    db: str,
    args: argparse.Namespace,
    figures: TowerFigures,
    floor: int,
) -> None:
    """--jobs dry runs at once; returns once the pool has grown to the round's peak (it
    does once the queue is served) and has no creation under way."""
    before = await Phases.read(client)
    started = time.perf_counter()
    sustained = await burst(client, args.jobs)
    figures.sustained.append(args.jobs / sustained.seconds * 60)
    await until(_at_most(db, "SELECT count(*) FROM pool_slots WHERE status = 'busy'", 0))
    figures.sustained_clean.append(args.jobs / (time.perf_counter() - started) * 60)
    print(f"  sustained: {figures.sustained[-1]:.0f} jobs/min", flush=True)
    report_phases("sustained", (await Phases.read(client)).since(before))
    await until(_more_than(db, READY, floor))
    await until(_at_most(db, SETTLING, 0))


def _more_than(db: str, query: str, limit: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await count(db, query) > limit

    return check


def _at_most(db: str, query: str, limit: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await count(db, query) <= limit

    return check


async def tower_round(
    server: LocalPostgres,
    code: Path,
    name: str,
    args: argparse.Namespace,
    workdir: Path,
    bare: Bare,
) -> TowerFigures:
    scope = f"parpaing-bench-{name}"
    db = await database(server, name.replace("-", "_"))
    env = {
        "DATABASE_URL": db,
        "TOWER_RUNNER": "docker",
        "WORKER_IMAGE": args.image,
        "WORKER_NET": scope,
        "GATEWAY_SOCKET_VOLUME": f"{scope}-socket",
        "POOL_IDLE_SECONDS": str(args.idle),
        # Its workers go with it: nothing of a round outlives it on the daemon.
        "POOL_DRAIN_ON_LAST_STOP": "true",
        "WORKER_MEM_LIMIT": "256m",
        "WORKER_CPU_LIMIT": "0.5",
        "TOWER_API_KEY": "",
        "GATEWAY_MANAGED": "false",  # dry runs call no provider
        "STATE_DIR": str(workdir / f"state-{name}"),
    }
    env |= FIXED if name.startswith("fixed") else {}
    try:
        LOGS.mkdir(parents=True, exist_ok=True)
        with serving(code, env, LOGS / f"{name}.log") as url:
            await until_serving([url])
            return await tower_side(url, db, args, bare)
    finally:
        await asyncio.to_thread(remove_scope, scope)


def report_tower(title: str, figures: TowerFigures, bare: Bare, args: argparse.Namespace) -> None:
    assert figures.first is not None and figures.second is not None
    none, bridge = bare.best["none"], bare.best["bridge"]
    ratios = figures.ratios()
    rate, clean = statistics.median(figures.sustained), statistics.median(figures.sustained_clean)
    print(
        f"  sustained, {args.jobs} at once, {len(ratios)} rounds: {rate:5.0f} jobs/min (median); "
        f"/ bare none around each: {', '.join(f'{r:.2f}' for r in ratios)}, median "
        f"{statistics.median(ratios):.2f} (target {SUSTAINED_TARGET}); / best bare none "
        f"{rate / none:.2f}; / best bare bridge {rate / bridge:.2f}; "
        f"{clean:5.0f} jobs/min counting the removals"
    )
    print(
        f"  burst of {args.burst}: first {figures.first.seconds:.1f} s "
        f"(per-job p50 {figures.first.per_job_p50:.2f} s); after {args.gap:.0f} s, "
        f"{figures.ready_before_second} warm ready; second {figures.second.seconds:.2f} s "
        f"(per-job p50 {figures.second.per_job_p50:.2f} s; target < {SECOND_BURST_TARGET} s)"
    )
    print(f"  pool back at its floor {figures.back_to_floor:.0f} s after the second burst "
          f"(POOL_IDLE_SECONDS={args.idle})")  # fmt: skip


async def run(args: argparse.Namespace) -> None:
    with bare_ways(args.image) as bare:
        print(f"bare hardened `docker run --rm -i`, {args.runs} dry runs per level:")
        await asyncio.to_thread(bare.survey, args.runs, args.levels)
        print(f"  best: none {bare.best['none']:.0f} jobs/min ({bare.level} at once), "
              f"bridge {bare.best['bridge']:.0f} jobs/min")  # fmt: skip
        await tower_rounds(args, bare)


async def tower_rounds(args: argparse.Namespace, bare: Bare) -> None:
    suffix = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory(prefix="parpaing-bench-") as root:
        workdir = Path(root)
        server = await asyncio.to_thread(LocalPostgres(workdir / "pgdata").start)
        try:
            for kind in args.only or ["fixed", "elastic"]:
                print(f"tower, {kind}:")
                name = f"{kind}-{suffix}"
                figures = await tower_round(server, ROOT, name, args, workdir, bare)
                report_tower(f"tower, {kind}", figures, bare, args)
        finally:
            await asyncio.to_thread(server.stop, "immediate")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200, help="dry runs of the sustained run")
    parser.add_argument("--rounds", type=int, default=3, help="sustained rounds")
    parser.add_argument("--burst", type=int, default=50, help="dry runs per burst")
    parser.add_argument("--gap", type=float, default=60, help="seconds between the bursts")
    parser.add_argument("--idle", type=int, default=90, help="POOL_IDLE_SECONDS (> --gap)")
    parser.add_argument("--runs", type=int, default=48, help="bare runs per level")
    parser.add_argument("--levels", type=int, nargs="+", default=[4, 8], help="bare concurrency")
    parser.add_argument("--only", nargs="+", choices=["fixed", "elastic"], help="tower rounds")
    parser.add_argument("--image", default=Settings().worker_image, help="worker image")
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
