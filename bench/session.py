"""Continue against new: the time from `POST /jobs/{id}/continue` to the agent's first LLM
request, against the same for a new job (`POST /jobs`), in one run (issue 19).

A benchmark, not a test: it prints figures and a target, and never fails on them.
Run from the repository root, with Docker up and the images built (`parpaing images build`):
    .venv/bin/python bench/session.py [--runs 10]

Set-up as bench/agent.py: a private PostgreSQL, a tower running its own gateway in front
of the scripted fake LLM, the real worker image (Claude Code) and a warm pool of 2, a bare
profile. One first turn is run; then, alternating, a new job and a continue of that first
turn (siblings: each starts from the same state, so each restores the same bytes). The
target: a continue's p50 at most 1.5 times a new job's, plus the restored bytes at the
upload throughput (this prints the bytes; bench/workspace.py measures the throughput).
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
import os
import statistics
import tempfile
import time

import asyncpg
import docker

from bench.agent import BARE_PROFILE
from bench.e2e import database
from tests.e2e.agents import AgentRig, agent_rig
from tests.e2e.gateway import gateway_names
from tests.e2e.support import isolated_network, wait_pool_ready
from tests.support.fake_llm import text
from tower.db.embedded import LocalPostgres

TARGET_RATIO = 1.5
PROMPT = "Say hello. (bench-session)"
STATE_SIZE = "SELECT size FROM job_artifacts WHERE job_id = $1 AND kind = 'session'"


async def to_first_call(rig: AgentRig, path: str, body: dict[str, str]) -> tuple[str, float]:
    """(job id, seconds from the POST to the agent's first LLM request); waits for the end."""
    before = len(rig.fake.requests)
    started = time.time()
    answer = await rig.tower.post(path, json=body)
    answer.raise_for_status()
    job_id = str(answer.json()["job_id"])
    waited = await rig.tower.get(f"/jobs/{job_id}/wait", params={"timeout": 120}, timeout=150)
    record = waited.json()
    if record["status"] != "completed":
        raise RuntimeError(f"job {job_id} ended {record['status']}: {record['error']}")
    calls = rig.fake.requests[before:]
    if not calls:
        raise RuntimeError(f"job {job_id} never called the fake LLM")
    return job_id, calls[0].at - started


async def compare(rig: AgentRig, url: str, runs: int) -> None:
    new_job = {"agent_id": "bench", "profile": "bench-agent", "prompt": PROMPT}
    await wait_pool_ready(url, 2)
    first, _ = await to_first_call(rig, "/jobs", new_job)
    fresh, continued = [], []
    for index in range(runs + 1):  # the first pair warms caches; it is not counted
        await wait_pool_ready(url, 2)
        _, one_new = await to_first_call(rig, "/jobs", new_job)
        await wait_pool_ready(url, 2)
        _, one_continue = await to_first_call(rig, f"/jobs/{first}/continue", {"prompt": PROMPT})
        if index:
            fresh.append(one_new)
            continued.append(one_continue)
    connection = await asyncpg.connect(url)
    try:
        state = await connection.fetchval(STATE_SIZE, first)
    finally:
        await connection.close()
    report(fresh, continued, state or 0)


def report(fresh: list[float], continued: list[float], state: int) -> None:
    new_p50 = statistics.median(fresh) * 1000
    continue_p50 = statistics.median(continued) * 1000
    ratio = continue_p50 / new_p50
    verdict = "meets" if ratio <= TARGET_RATIO else "misses"
    print(f"\nClaude Code, to the first LLM request, {len(fresh)} runs each")
    print(f"  new job      p50 {new_p50:7.0f} ms")
    print(f"  continue     p50 {continue_p50:7.0f} ms  (restoring {state} bytes of state)")
    print(f"  ratio {ratio:.2f}: {verdict} the target <= {TARGET_RATIO} (before the bytes' share)")


async def measure(server: LocalPostgres, runs: int) -> None:
    client = docker.from_env()
    url = await database(server, "session")
    image = os.environ.get("WORKER_IMAGE", "parpaing-worker:latest")
    network_names = isolated_network(client)
    network = next(network_names)
    try:
        with gateway_names(client) as names:
            images = (os.environ.get("GATEWAY_IMAGE", "parpaing-gateway:latest"), image)
            async with agent_rig(client, url, network, names, images, pool_size=2) as rig:
                rig.fake.set_script([text("hello from the fake model")] * 1000)
                profile = {"content": BARE_PROFILE}
                (
                    await rig.tower.put("/configs/profile/bench-agent", json=profile)
                ).raise_for_status()
                await compare(rig, url, runs)
    finally:
        next(network_names, None)


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="parpaing-bench-") as root:
        server = await asyncio.to_thread(LocalPostgres(Path(root) / "pgdata").start)
        try:
            await measure(server, args.runs)
        finally:
            await asyncio.to_thread(server.stop, "immediate")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="runs of each kind")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
