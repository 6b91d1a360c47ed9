"""Shared pieces of the end-to-end tests: a tower running jobs in real containers.

Jobs run arbitrary code through the real path by way of a `shell` engine (bash reading
the prompt on stdin) and a `shell` profile (no template, no resources, so the prompt
arrives as written and the WORKER_* settings decide the limits). Each test gives its
workers a WORKER_NET name of its own (workers have no network: the name labels them, as
`parpaing.pool`) and a gateway socket volume named after it, so the containers and
volumes it caused can be found, and removed, by that name.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import asyncpg
import docker
import httpx
from docker.errors import APIError, NotFound
from docker.models.containers import Container

from tests.e2e.conftest import WORKER_IMAGE
from tests.support.live import live_tower
from tower.settings import Settings

T = TypeVar("T")

SHELL_ENGINE = """\
id = "shell"
name = "Shell"
description = "bash reading its script on stdin: tests run arbitrary code in a worker."
binary = "bash"
args = ["-s"]
output = "text"

[prompt]
via = "stdin"
"""

# No template and no resources: the prompt is the script, the settings are the limits.
SHELL_PROFILE = """\
name = "shell"
description = "Runs the prompt as a bash script."
engine = "shell"
"""

WORKER_ROLE = "parpaing.role=worker"
TERMINAL = ("completed", "failed", "cancelled")
JOB_DEADLINE = 180.0


def docker_settings(database_url: str, network: str, **overrides: Any) -> Settings:
    """Tower settings for a Docker-run test: its own worker scope and gateway socket
    volume, otherwise defaults."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "tower_runner": "docker",
        "worker_net": network,
        # The image the session built (PARPAING_TEST_WORKER_IMAGE), not the default tag.
        "worker_image": WORKER_IMAGE,
        "gateway_socket_volume": socket_volume_name(network),
        "pool_size": 0,
        "poll_interval": 0.2,
        # No gateway unless a test asks for one (tests/e2e/gateway.py): it needs a name
        # of its own on a shared daemon, and most tests never call a provider.
        "gateway_managed": False,
    }
    return Settings(**{**values, **fixed_pool(overrides), **overrides})


def fixed_pool(overrides: dict[str, Any]) -> dict[str, Any]:
    """A pool that stays at its floor (POOL_MAX = POOL_MIN) unless the test sets POOL_MAX:
    tests count containers, and an elastic pool would add some as jobs queue."""
    floor = overrides.get("pool_min", overrides.get("pool_size", 0))
    return {"pool_max": floor}


@contextlib.asynccontextmanager
async def serve(settings: Settings, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """A tower with its own Docker runner, in this event loop; yields a loopback URL."""
    async with live_tower(settings, host=host) as url:
        yield url


@contextlib.asynccontextmanager
async def shell_tower(
    settings: Settings, host: str = "127.0.0.1"
) -> AsyncIterator[httpx.AsyncClient]:
    """A served tower with the shell engine and profile registered; yields its client."""
    async with serve(settings, host) as url, httpx.AsyncClient(base_url=url, timeout=60) as client:
        await register_shell(client)
        yield client


async def register_shell(client: httpx.AsyncClient) -> None:
    for path, content in (
        ("/configs/engine/shell", SHELL_ENGINE),
        ("/configs/profile/shell", SHELL_PROFILE),
    ):
        response = await client.put(path, json={"content": content})
        assert response.status_code in (200, 201), response.text


async def submit(client: httpx.AsyncClient, prompt: str, **fields: Any) -> str:
    """Submit a job (the shell engine and profile unless `fields` say otherwise)."""
    body = {"agent_id": "e2e", "engine": "shell", "profile": "shell", "prompt": prompt}
    response = await client.post("/jobs", json={**body, **fields})
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id


async def wait_terminal(
    client: httpx.AsyncClient, job_id: str, deadline: float = JOB_DEADLINE
) -> dict[str, Any]:
    """The job's record once it is terminal (GET /wait blocks until then)."""
    response = await client.get(
        f"/jobs/{job_id}/wait", params={"timeout": deadline}, timeout=deadline + 30
    )
    assert response.status_code == 200, f"{job_id} not terminal in {deadline}s: {response.text}"
    record: dict[str, Any] = response.json()
    return record


async def run_job(client: httpx.AsyncClient, prompt: str, **fields: Any) -> dict[str, Any]:
    return await wait_terminal(client, await submit(client, prompt, **fields))


def last_json_line(record: dict[str, Any]) -> dict[str, Any]:
    """The JSON object a probe script prints as its last line of output."""
    assert record["status"] == "completed", describe(record)
    lines = (record["result"] or "").strip().splitlines()
    assert lines, describe(record)
    report: dict[str, Any] = json.loads(lines[-1])
    return report


def describe(record: dict[str, Any]) -> str:
    keys = ("job_id", "status", "exit_code", "failure_reason", "error", "result")
    return json.dumps({key: record.get(key) for key in keys}, indent=1)[:4000]


def python_script(source: str) -> str:
    """A shell-engine prompt that runs `source` with the worker image's python3."""
    return f"python3 - <<'PARPAING_EOF'\n{source}\nPARPAING_EOF\n"


async def poll_until(
    check: Callable[[], Awaitable[T | None]], what: str, deadline: float = 60.0
) -> T:
    """Poll `check` until it returns something, for moments nothing announces."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        found = await check()
        if found is not None and found is not False:
            return found
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {deadline:g}s waiting for {what}")


# --- the warm pool's rows ---------------------------------------------------------------

# The pool's rows by status, oldest first (the columns the tests look at).
SLOTS_BY_STATUS = """
SELECT slot_id, container_id, status, job_id FROM pool_slots
WHERE status = $1 ORDER BY created_at
"""

# The slot a job's container holds while it runs.
SLOT_OF_JOB = "SELECT slot_id, container_id, status FROM pool_slots WHERE job_id = $1"


async def slots(database_url: str, status: str) -> list[dict[str, Any]]:
    connection = await asyncpg.connect(database_url)
    try:
        return [dict(row) for row in await connection.fetch(SLOTS_BY_STATUS, status)]
    finally:
        await connection.close()


async def slot_of_job(database_url: str, job_id: str) -> dict[str, Any] | None:
    connection = await asyncpg.connect(database_url)
    try:
        row = await connection.fetchrow(SLOT_OF_JOB, job_id)
    finally:
        await connection.close()
    return dict(row) if row is not None and row["container_id"] else None


async def wait_pool_ready(database_url: str, count: int) -> list[dict[str, Any]]:
    """The ready slots, once there are `count` of them."""

    async def ready() -> list[dict[str, Any]] | None:
        rows = await slots(database_url, "ready")
        return rows if len(rows) >= count else None

    return await poll_until(ready, f"{count} ready pool slots", deadline=120)


async def running_container(
    database_url: str, job_id: str, client: docker.DockerClient | None = None
) -> str:
    """The id of the container running `job_id`: its busy pool slot's container or,
    given a Docker client, a container labelled with the job (a cold slot may have no row)."""

    async def busy() -> str | None:
        slot = await slot_of_job(database_url, job_id)
        if slot and slot["status"] == "busy":
            return str(slot["container_id"])
        if client is None:
            return None
        labelled = await asyncio.to_thread(
            client.containers.list, filters={"label": f"parpaing.job={job_id}"}
        )
        return str(labelled[0].id) if labelled else None

    container_id: str = await poll_until(busy, f"a running container for {job_id}")
    return container_id


# --- Docker objects ---------------------------------------------------------------------


def new_network_name() -> str:
    return f"parpaing-e2e-{uuid.uuid4().hex[:10]}"


def socket_volume_name(network: str) -> str:
    """The gateway socket volume of the test whose WORKER_NET is `network`."""
    return f"{network}-socket"


def worker_containers(client: docker.DockerClient, network: str) -> list[Container]:
    """Every worker container (running or not) of the pool scoped by `network`."""
    found: list[Container] = client.containers.list(
        all=True, filters={"label": [WORKER_ROLE, f"parpaing.pool={network}"]}
    )
    return found


def container_exists(client: docker.DockerClient, container_id: str) -> bool:
    try:
        client.containers.get(container_id)
    except NotFound:
        return False
    return True


def remove_network_and_workers(client: docker.DockerClient, network: str) -> None:
    """Remove the workers of `network`, their volumes (the gateway's socket volume once
    nothing holds it: whoever removes the last holder removes it), then any network of
    that name."""
    for container in worker_containers(client, network):
        volumes = [m["Name"] for m in container.attrs.get("Mounts", []) if m.get("Name")]
        with contextlib.suppress(NotFound, APIError):
            container.remove(force=True)
        for name in volumes:
            with contextlib.suppress(NotFound, APIError):
                client.volumes.get(name).remove(force=True)
    with contextlib.suppress(NotFound, APIError):
        client.volumes.get(socket_volume_name(network)).remove(force=True)
    with contextlib.suppress(NotFound, APIError):
        client.networks.get(network).remove()


def isolated_network(client: docker.DockerClient) -> Iterator[str]:
    """Body of a fixture: a fresh worker network name, everything on it removed after."""
    network = new_network_name()
    try:
        yield network
    finally:
        remove_network_and_workers(client, network)


def host_addresses() -> list[str]:
    """This machine's own IPv4 addresses other than loopback (docker0's among them)."""
    output = subprocess.run(
        ["ip", "-j", "-4", "addr", "show"], capture_output=True, text=True, check=True
    ).stdout
    addresses = [
        info["local"]
        for interface in json.loads(output)
        for info in interface.get("addr_info", [])
        if not info["local"].startswith("127.")
    ]
    assert addresses, "this machine has no non-loopback IPv4 address to test against"
    return addresses
