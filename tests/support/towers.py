"""Towers as real processes, and jobs submitted the way the jobs API submits them.

Multi-replica tests need separate processes (separate event loops, pools, LISTEN
connections) that can be killed with SIGKILL. Each tower logs to a file in the test's
temporary directory, shown when it fails to start.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from tower.db import channels
from tower.db.embedded import free_port

ROOT = Path(__file__).resolve().parents[2]
START_DEADLINE = 60.0

# The row the jobs API inserts for a submitted job, and its NOTIFY, in one transaction.
INSERT_JOB = """
WITH inserted AS (
    INSERT INTO jobs (job_id, agent_id, engine, profile, request, priority, max_attempts,
                      run_after)
    VALUES ($1, $2, 'claude-code', 'default', $3::text::jsonb, $4, $5,
            now() + make_interval(secs => $6))
    RETURNING job_id
)
SELECT pg_notify($7, job_id) FROM inserted
"""

# What DELETE /jobs/{id} does: a conditional update to 'cancelled', then NOTIFY.
CANCEL_JOB = """
WITH cancelled AS (
    UPDATE jobs SET status = 'cancelled', finished_at = now(),
                    lease_owner = NULL, lease_token = NULL, lease_until = NULL
    WHERE job_id = $1 AND status IN ('pending', 'running')
    RETURNING job_id
)
SELECT pg_notify($2, job_id) FROM cancelled
"""


def new_job_id(agent_id: str = "a") -> str:
    return f"{agent_id}-{uuid.uuid4().hex[:12]}"


async def insert_job(
    connection: Any,
    prompt: str,
    *,
    priority: int = 0,
    max_attempts: int = 1,
    delay_seconds: float = 0.0,
    agent_id: str = "a",
    webhook_url: str | None = None,
) -> str:
    job_id = new_job_id(agent_id)
    fields = {"agent_id": agent_id, "engine": "claude-code", "prompt": prompt}
    if webhook_url is not None:
        fields["webhook_url"] = webhook_url
    request = json.dumps(fields)
    await connection.execute(
        INSERT_JOB,
        job_id,
        agent_id,
        request,
        priority,
        max_attempts,
        delay_seconds,
        channels.JOB_PENDING,
    )
    return job_id


async def cancel_job(connection: Any, job_id: str) -> bool:
    rows = await connection.fetch(CANCEL_JOB, job_id, channels.JOB_CANCELLED)
    return len(rows) == 1


def read_run_log(path: Path) -> list[tuple[str, int, int]]:
    """(job_id, attempt, pid) for every run the simulated runner started."""
    if not path.exists():
        return []
    runs = []
    for line in path.read_text().splitlines():
        job_id, attempt, pid = line.split()
        runs.append((job_id, int(attempt), int(pid)))
    return runs


@dataclass
class TowerProcess:
    tower_id: str
    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as when a host dies."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM: a clean shutdown; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


async def start_tower(
    database_url: str, workdir: Path, tower_id: str, **settings: float | str
) -> TowerProcess:
    """Start `tower serve` in a new process and wait until it answers HTTP.

    `settings` become environment variables (lease_seconds=2 -> LEASE_SECONDS=2).
    """
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "TOWER_ID": tower_id,
        "TOWER_RUNNER": "simulated",
        "TOWER_API_KEY": "",
        # A tower that runs the gateway needs names of its own on a shared daemon
        # (tests/e2e/gateway.py); these towers never call a provider.
        "GATEWAY_MANAGED": "false",
        # A pool that stays at its floor unless the test asks for POOL_MAX (tests count
        # containers; an elastic pool keeps what a job's demand grew for a while).
        "POOL_MAX": str(settings.get("pool_min", settings.get("pool_size", 2))),
        **{name.upper(): str(value) for name, value in settings.items()},
    }
    log_path = workdir / f"{tower_id}.log"
    process = _spawn(port, env, log_path)
    tower = TowerProcess(tower_id, f"http://127.0.0.1:{port}", process, log_path)
    try:
        await _wait_until_serving(tower)
    except BaseException:
        tower.kill()
        raise
    return tower


def _spawn(port: int, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "tower.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    with log_path.open("wb") as log_file:
        return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)


async def _wait_until_serving(tower: TowerProcess) -> None:
    deadline = time.monotonic() + START_DEADLINE
    async with httpx.AsyncClient(base_url=tower.base_url, timeout=5) as client:
        while time.monotonic() < deadline:
            if tower.process.poll() is not None:
                raise RuntimeError(f"tower {tower.tower_id} exited:\n{tower.log()}")
            try:
                if (await client.get("/openapi.json")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"tower {tower.tower_id} did not answer in time:\n{tower.log()}")


async def connect(database_url: str) -> Any:
    return await asyncpg.connect(database_url)
