"""Real-agent overhead: what Parpaing adds to a real Claude Code run, against the same CLI
run directly on this host, with the same prompt and the same scripted fake LLM, in one run.

A benchmark, not a test: it prints figures and a target, and never fails on them.
Run from the repository root, with Docker up and the images built (`parpaing images build`):
    .venv/bin/python bench/agent.py [--runs 15]

Set-up: a private PostgreSQL, a tower running its own gateway (as tests/e2e/agents.py
does) in front of the scripted fake LLM (tests/support/fake_llm.py), the real worker image
and a warm pool. The direct runs use the very same CLI binary, copied out of the worker
image, run as an unprivileged user with the worker's arguments, a fresh empty HOME each
time, and ANTHROPIC_BASE_URL pointing straight at the fake.
Per run, alternating direct and Parpaing:
- direct: from starting the process to its exit (and to its first LLM request);
- Parpaing: from POST /jobs to the terminal record from /jobs/{id}/wait (and to its first
  LLM request), the pool kept warm between runs.
The overhead is the difference of the medians (target: <= 100 ms at p50). The gateway's
share: a small POST to the fake directly and through the gateway with a running job's
token (p50 of each, same run), times the LLM calls one run makes.
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
import subprocess
import tempfile
import time
from dataclasses import dataclass

import docker
import httpx

from bench.e2e import database
from tests.e2e.agents import AgentRig, agent_rig
from tests.e2e.gateway import anthropic_headers, gateway_names, running_job
from tests.e2e.support import isolated_network, wait_pool_ready
from tests.support.fake_llm import FakeLLM, text
from tower.db.embedded import LocalPostgres

TARGET_MS = 100.0
PROMPT = "Say hello. (bench-agent)"
ANSWER = "hello from the fake model"
CLI_IN_IMAGE = "/usr/local/lib/node_modules/@anthropic-ai/claude-code/bin/claude.exe"
# The worker's user (docs/execution.md): the CLI refuses to skip permissions as root.
WORKER_UID = 1000
ARGS = ["-p", "--dangerously-skip-permissions", "--output-format", "json"]
# The job's profile adds nothing to ARGS (no model, tools, turns, prompt template or
# CLAUDE.md), so both sides run the same command line and read the same files.
BARE_PROFILE = 'name = "bench-agent"\nengine = "claude-code"\n'


@dataclass(frozen=True)
class Run:
    total: float
    to_first_call: float
    calls: int


def worker_scratch(root: Path) -> Path:
    """A directory the worker's user owns, under `root` (which it may only traverse)."""
    root.chmod(0o711)
    scratch = root / "agent"
    scratch.mkdir()
    os.chown(scratch, WORKER_UID, WORKER_UID)
    return scratch


def copy_cli(client: docker.DockerClient, image: str, directory: Path) -> Path:
    """The worker image's Claude Code binary, copied to this host."""
    container = client.containers.create(image, "true", network_mode="none")
    try:
        target = directory / "claude"
        subprocess.run(["docker", "cp", f"{container.id}:{CLI_IN_IMAGE}", str(target)], check=True)
    finally:
        container.remove(force=True)
    return target


def direct_run(cli: Path, fake: FakeLLM, scratch: Path) -> Run:
    home = Path(tempfile.mkdtemp(prefix="home-", dir=scratch))
    os.chown(home, WORKER_UID, WORKER_UID)
    env = {
        "HOME": str(home),
        "PATH": "/usr/bin:/bin",
        "ANTHROPIC_BASE_URL": fake.url,
        "ANTHROPIC_API_KEY": "bench-direct-key",
        **{name: "1" for name in QUIET},
    }
    before = len(fake.requests)
    started = time.time()
    subprocess.run(
        [*AS_WORKER, str(cli), *ARGS],
        input=PROMPT.encode(),
        env=env,
        cwd=home,
        check=True,
        capture_output=True,
    )
    return _run(started, time.time(), fake, before)


AS_WORKER = ["setpriv", f"--reuid={WORKER_UID}", f"--regid={WORKER_UID}", "--clear-groups"]
QUIET = (
    "DISABLE_AUTOUPDATER",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
    "DISABLE_TELEMETRY",
    "DISABLE_ERROR_REPORTING",
)


async def parpaing_run(rig: AgentRig) -> Run:
    before = len(rig.fake.requests)
    started = time.time()
    body = {"agent_id": "bench", "profile": "bench-agent", "prompt": PROMPT}
    submitted = await rig.tower.post("/jobs", json=body)
    submitted.raise_for_status()
    job_id = submitted.json()["job_id"]
    waited = await rig.tower.get(f"/jobs/{job_id}/wait", params={"timeout": 120}, timeout=150)
    ended = time.time()
    record = waited.json()
    if record["status"] != "completed":
        raise RuntimeError(f"job {job_id} ended {record['status']}: {record['error']}")
    return _run(started, ended, rig.fake, before)


def _run(started: float, ended: float, fake: FakeLLM, before: int) -> Run:
    calls = fake.requests[before:]
    if not calls:
        raise RuntimeError("the agent never called the fake LLM")
    return Run(ended - started, calls[0].at - started, len(calls))


async def call_latencies(base: str, headers: dict[str, str], calls: int) -> list[float]:
    # A new connection per call, as the gateway makes to its upstream (and it keeps
    # http.server's delayed ACKs on a reused connection out of the baseline).
    fresh = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=fresh) as client:
        measured = []
        for index in range(calls + 5):
            started = time.perf_counter()
            answer = await client.post("/v1/messages", json=SMALL_CALL, headers=headers)
            answer.raise_for_status()
            if index >= 5:  # the first few warm the connection and the auth cache
                measured.append(time.perf_counter() - started)
    return measured


SMALL_CALL = {"model": "bench", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}


async def gateway_share(rig: AgentRig, database_url: str) -> tuple[float, float]:
    """p50 seconds of one small call: directly to the fake, and through the gateway."""
    held = await running_job(database_url)
    direct = await call_latencies(rig.fake.url, anthropic_headers("direct"), 200)
    through = await call_latencies(
        f"{str(rig.gateway.base_url).rstrip('/')}/anthropic", anthropic_headers(held.token), 200
    )
    return statistics.median(direct), statistics.median(through)


async def measure(server: LocalPostgres, root: Path, args: argparse.Namespace) -> None:
    client = docker.from_env()
    url = await database(server, "agent")
    image = os.environ.get("WORKER_IMAGE", "parpaing-worker:latest")
    scratch = worker_scratch(root)
    cli = await asyncio.to_thread(copy_cli, client, image, scratch)
    network_names = isolated_network(client)
    network = next(network_names)
    try:
        with gateway_names(client) as names:
            images = (os.environ.get("GATEWAY_IMAGE", "parpaing-gateway:latest"), image)
            async with agent_rig(client, url, network, names, images, pool_size=2) as rig:
                rig.fake.set_script([text(ANSWER)] * 1000)
                profile = {"content": BARE_PROFILE}
                (
                    await rig.tower.put("/configs/profile/bench-agent", json=profile)
                ).raise_for_status()
                await compare(rig, url, cli, scratch, args.runs)
    finally:
        next(network_names, None)


async def compare(rig: AgentRig, url: str, cli: Path, root: Path, runs: int) -> None:
    direct, ours = [], []
    for index in range(runs + 1):  # the first pair warms caches; it is not counted
        await wait_pool_ready(url, 2)
        one_direct = await asyncio.to_thread(direct_run, cli, rig.fake, root)
        one_ours = await parpaing_run(rig)
        if index:
            direct.append(one_direct)
            ours.append(one_ours)
    report(direct, ours, *await gateway_share(rig, url))


def report(direct: list[Run], ours: list[Run], call_direct: float, call_gateway: float) -> None:
    def p50(runs: list[Run], field: str) -> float:
        return statistics.median(getattr(run, field) for run in runs) * 1000

    print(f"\nClaude Code with one scripted answer, {len(ours)} runs each")
    for name, runs in (("direct on this host", direct), ("Parpaing job", ours)):
        print(
            f"  {name:20s} p50 {p50(runs, 'total'):7.0f} ms"
            f"  (first LLM call after {p50(runs, 'to_first_call'):6.0f} ms,"
            f" {statistics.median(run.calls for run in runs):.0f} calls)"
        )
    overhead = p50(ours, "total") - p50(direct, "total")
    calls = statistics.median(run.calls for run in ours)
    share = (call_gateway - call_direct) * 1000 * calls
    verdict = "meets" if overhead <= TARGET_MS else "misses"
    print(f"  overhead at p50: {overhead:.0f} ms: {verdict} the target <= {TARGET_MS:.0f} ms")
    print(
        f"  gateway's share: {share:.1f} ms ({calls:.0f} calls x"
        f" {(call_gateway - call_direct) * 1000:.2f} ms: one call p50 {call_direct * 1000:.2f} ms"
        f" direct, {call_gateway * 1000:.2f} ms through the gateway)"
    )


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="parpaing-bench-") as root:
        server = await asyncio.to_thread(LocalPostgres(Path(root) / "pgdata").start)
        try:
            await measure(server, Path(root), args)
        finally:
            await asyncio.to_thread(server.stop, "immediate")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="runs of each kind")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
