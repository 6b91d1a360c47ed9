"""Workers without a network device: what a container's start saves, bare and through tower.

A benchmark, not a test: it prints figures and ratios from one run, never fails on them.
Run from the repository root, with Docker up and the worker image built:
    .venv/bin/python bench/nonet.py [--runs 40] [--jobs 50] [--rounds 2] [--before REF]

1. Bare: RUNS hardened `docker run --rm -i` dry-run jobs of the worker image (the
   worker reads a dry-run bundle on stdin, answers with its output frame and exits), one
   after another, alternating between the two ways a worker was connected:
   - bridge: on an internal bridge without a host address (WORKER_NET before this change);
   - none: `--network none` with the gateway's socket volume mounted read-only (now).
   Jobs per minute of each, and none / bridge; then the same for a container that only
   runs `true` (the start and removal alone, as the figures in the hardening issue).
2. Through tower: JOBS dry-run jobs submitted at once to one `parpaing serve` (POOL_SIZE=2,
   MAX_CONCURRENT_JOBS=8, so most jobs create their container) from the code at REF
   (default: this branch's merge base with main, workers on the bridge) and from this
   checkout (workers without network), ROUNDS times alternating; jobs per minute from the
   first submission to the last terminal record, and after / before.
The same worker image serves both sides: its forwarder starts only where the socket volume
is mounted, so the image is not what differs.
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
import logging
import os
import signal
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator

import docker
import httpx

from bench.e2e import database, until_serving, wait
from tower.db.embedded import LocalPostgres, free_port
from tower.execution import protocol
from tower.execution.bundle import bundle_tar
from tower.execution.docker.network import SOCKET_VOLUME_OPTIONS
from tower.execution.slots import ContainerShape
from tower.execution.spec import JobSpec
from tower.settings import Settings

ROOT = HERE.parent
DRY_RUN = {"agent_id": "bench", "engine": "claude-code", "prompt": "benchmark", "dry_run": True}
POOL_SIZE = 2
CONCURRENCY = 8
TOWER_DEADLINE = 300.0


# --- 1. bare docker run ----------------------------------------------------------------------


def dry_run_frame() -> bytes:
    """A dry-run job's bundle, framed as tower writes it on a worker's stdin."""
    shape = ContainerShape("", "256m", 0.5, 256, "", "")
    spec = JobSpec(
        job_id="bench",
        argv=("claude", "-p"),
        env={},
        cwd=protocol.WORKSPACE_DIR,
        files=(),
        stdin=None,
        prompt_file="/tmp/parpaing/prompt.md",
        pre_hook=None,
        post_hook=None,
        dry_run=True,
        timeout_seconds=60,
        output_limit=1 << 20,
        output_format="text",
        shape=shape,
    )
    tar = bundle_tar(spec)
    return protocol.bundle_header(len(tar)) + tar


def hardened(image: str, network: list[str], command: tuple[str, ...] = ()) -> list[str]:
    """`docker run` of one worker as tower creates it (hardening.py), minus the bundle
    volume (a tmpfs mount here, so no volume create/remove is timed) and the entry script
    (the worker exits after the job instead of idling for tower to collect)."""
    scratch = f"rw,exec,nosuid,nodev,uid={protocol.WORKER_UID},gid={protocol.WORKER_UID}"
    return [
        "docker", "run", "--rm", "-i", "--init",
        "--user", f"{protocol.WORKER_UID}:{protocol.WORKER_UID}",
        "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        "--pids-limit", "256", "--ipc", "private", "--memory", "256m",
        "--memory-swap", "256m", "--cpus", "0.5", "--hostname", "worker",
        "--tmpfs", f"/tmp:{scratch},size=64m,mode=1777",
        "--tmpfs", f"{protocol.HOME_DIR}:{scratch},size=64m,mode=0700",
        "--tmpfs", f"{protocol.WORKSPACE_DIR}:{scratch},size=64m,mode=0755",
        "--tmpfs", f"{protocol.BUNDLE_DIR}:{scratch},size=64m,mode=0755",
        *network,
        image, *(command or ("python3", protocol.WORKER_PATH)),
    ]  # fmt: skip


def bare_rounds(
    image: str, runs: int, bridge: str, volume: str, command: tuple[str, ...] = ()
) -> dict[str, float]:
    """Jobs per minute of each way, the runs alternating so load lands on both alike.
    With `command`, containers run it instead of a dry-run job."""
    frame = b"" if command else dry_run_frame()
    ways = {
        "bridge": hardened(image, ["--network", bridge], command),
        "none": hardened(
            image,
            ["--network", "none", "-v", f"{volume}:{protocol.GATEWAY_SOCKET_DIR}:ro"],
            command,
        ),
    }
    spent = dict.fromkeys(ways, 0.0)
    for _ in range(runs):
        for way, argv in ways.items():
            started = time.perf_counter()
            done = subprocess.run(argv, input=frame, capture_output=True, check=False)
            spent[way] += time.perf_counter() - started
            if done.returncode != 0 or not (command or protocol.OUTPUT_MARK in done.stdout):
                raise RuntimeError(f"{way}: the dry run failed: {done.stderr[-500:]!r}")
    return {way: runs / seconds * 60 for way, seconds in spent.items()}


@contextlib.contextmanager
def bare_setup(client: docker.DockerClient, suffix: str) -> Iterator[tuple[str, str]]:
    """The old workers' bridge (internal, no host address) and a socket volume."""
    bridge, volume = f"parpaing-bench-bridge-{suffix}", f"parpaing-bench-socket-{suffix}"
    client.api.create_network(
        bridge,
        driver="bridge",
        internal=True,
        options={"com.docker.network.bridge.inhibit_ipv4": "true"},
    )
    client.api.create_volume(volume, driver="local", driver_opts=SOCKET_VOLUME_OPTIONS)
    try:
        yield bridge, volume
    finally:
        with contextlib.suppress(docker.errors.APIError):
            client.api.remove_network(bridge)
        with contextlib.suppress(docker.errors.APIError):
            client.api.remove_volume(volume, force=True)


# --- 2. through tower --------------------------------------------------------------------


@contextlib.contextmanager
def checkout_at(ref: str, workdir: Path) -> Iterator[Path]:
    """A detached worktree of `ref`, removed after."""
    path = workdir / f"checkout-{ref[:12]}"
    git = ["git", "-C", str(ROOT)]
    subprocess.run([*git, "worktree", "add", "--detach", str(path), ref], check=True,
                   capture_output=True)  # fmt: skip
    try:
        yield path
    finally:
        subprocess.run([*git, "worktree", "remove", "--force", str(path)], check=False,
                       capture_output=True)  # fmt: skip


@contextlib.contextmanager
def serving(code: Path, env: dict[str, str], log: Path) -> Iterator[str]:
    """`parpaing serve` of the code in `code` (first on sys.path); yields its URL."""
    port = free_port()
    argv = [sys.executable, "-m", "tower.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    full = {**os.environ, **env, "PYTHONPATH": str(code)}
    with log.open("wb") as output:
        process = subprocess.Popen(argv, cwd=code, env=full, stdout=output, stderr=output)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)


async def burst(url: str, jobs: int) -> float:
    """Jobs per minute: JOBS dry runs submitted at once, to the last terminal record."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        started = time.perf_counter()
        submitted = await asyncio.gather(*(client.post("/jobs", json=DRY_RUN) for _ in range(jobs)))
        ids = [response.raise_for_status().json()["job_id"] for response in submitted]
        records = await asyncio.gather(*(wait(client, job_id) for job_id in ids))
        elapsed = time.perf_counter() - started
    failed = [r for r in records if r["status"] != "completed"]
    if failed:
        raise RuntimeError(f"{len(failed)} dry runs did not complete: {failed[0]}")
    return jobs / elapsed * 60


async def tower_round(
    server: LocalPostgres, code: Path, name: str, jobs: int, workdir: Path, image: str
) -> float:
    scope = f"parpaing-bench-{name}"
    env = {
        "DATABASE_URL": await database(server, name.replace("-", "_")),
        "TOWER_RUNNER": "docker",
        "WORKER_IMAGE": image,
        "WORKER_NET": scope,
        "GATEWAY_SOCKET_VOLUME": f"{scope}-socket",
        "POOL_SIZE": str(POOL_SIZE),
        "MAX_CONCURRENT_JOBS": str(CONCURRENCY),
        "WORKER_MEM_LIMIT": "256m",
        "WORKER_CPU_LIMIT": "0.5",
        "TOWER_API_KEY": "",
        "GATEWAY_MANAGED": "false",  # dry runs call no provider
        "STATE_DIR": str(workdir / f"state-{name}"),
    }
    try:
        with serving(code, env, workdir / f"{name}.log") as url:
            await until_serving([url])
            return await burst(url, jobs)
    finally:
        await asyncio.to_thread(remove_scope, scope)


def remove_scope(scope: str) -> None:
    """The round's workers (by pool label), their volumes, its network, if any."""
    client = docker.from_env()
    try:
        label = {"label": f"parpaing.pool={scope}"}
        for container in client.containers.list(all=True, filters=label):
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                container.remove(force=True)
        for volume in client.volumes.list(filters=label):
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                volume.remove(force=True)
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            client.volumes.get(f"{scope}-socket").remove(force=True)
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            client.networks.get(scope).remove()
    finally:
        client.close()


# --- main ----------------------------------------------------------------------------------


def report_bare(what: str, rates: dict[str, float]) -> None:
    print(f"bare hardened `docker run --rm`, {what}:")
    bridge, none = rates["bridge"], rates["none"]
    print(f"  bridge: {bridge:6.0f} runs/min   none + socket: {none:6.0f} runs/min")
    print(f"  none / bridge = {none / bridge:.2f}")


def merge_base() -> str:
    git = ["git", "-C", str(ROOT)]
    done = subprocess.run([*git, "merge-base", "HEAD", "main"], capture_output=True, text=True)
    return done.stdout.strip()


async def run(args: argparse.Namespace) -> None:
    image = args.image or Settings().worker_image
    suffix = uuid.uuid4().hex[:8]
    client = docker.from_env()
    try:
        with bare_setup(client, suffix) as (bridge, volume):
            bare = await asyncio.to_thread(bare_rounds, image, args.runs, bridge, volume)
            report_bare(f"dry runs ({args.runs} each, alternating)", bare)
            true = await asyncio.to_thread(bare_rounds, image, args.runs, bridge, volume, ("true",))
            report_bare(f"`true` ({args.runs} each, alternating)", true)
    finally:
        client.close()

    with tempfile.TemporaryDirectory(prefix="parpaing-bench-") as root:
        workdir = Path(root)
        server = await asyncio.to_thread(LocalPostgres(workdir / "pgdata").start)
        try:
            with checkout_at(args.before, workdir) as before:
                ratios = []
                for n in range(args.rounds):
                    old = await tower_round(
                        server, before, f"before-{suffix}-{n}", args.jobs, workdir, image
                    )
                    new = await tower_round(
                        server, ROOT, f"after-{suffix}-{n}", args.jobs, workdir, image
                    )
                    ratios.append(new / old)
                    print(
                        f"tower, {args.jobs} dry runs at once, round {n + 1}: before (bridge) "
                        f"{old:5.0f} jobs/min   after (no network) {new:5.0f} jobs/min   "
                        f"after / before = {new / old:.2f}"
                    )
        finally:
            await asyncio.to_thread(server.stop, "immediate")
    print(f"after / before, median of {args.rounds} rounds = {statistics.median(ratios):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40, help="bare runs of each way")
    parser.add_argument("--jobs", type=int, default=50, help="dry runs per tower burst")
    parser.add_argument("--rounds", type=int, default=2, help="before/after tower rounds")
    parser.add_argument("--before", default=merge_base(), help="git ref of the 'before' code")
    parser.add_argument("--image", default="", help="worker image (default: WORKER_IMAGE)")
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
