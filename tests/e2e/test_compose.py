"""The compose deployment end to end: docker-compose.yml as users run it (three tower
replicas behind the load balancer, PostgreSQL on a fresh volume, real worker containers),
driven only through the load balancer and the Docker daemon.

One stack, phases in order: every replica runs jobs; workers reach the gateway, which asks
the towers about tokens; a job's allow-list lets it through the egress proxy, which asks
the towers over TCP, to one site and not another; one tower stopped (SIGTERM) and one
killed mid-run lose no job; scaling 3 -> 1 -> 3 loses nothing; `down` leaves nothing.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import docker
import httpx
import pytest

from tests.e2e.compose_stack import (
    ComposeStack,
    StackImages,
    build_stack_images,
    describe,
    force_remove,
    leftovers,
    service_containers,
)
from tests.e2e.egress import ALLOWED, REFUSED, site
from tests.e2e.support import SHELL_ENGINE, SHELL_PROFILE
from tests.support.sse import collect

pytestmark = pytest.mark.slow

DEADLINE = 180.0  # a bound on waiting for the stack to settle, not an expectation of speed
TERMINAL = ("completed", "failed", "cancelled")
GRACE = 30  # SHUTDOWN_GRACE_SECONDS: longer than any job here, so a stopped tower finishes
SETTINGS = {
    "TOWER_REPLICAS": "3",
    "MAX_CONCURRENT_JOBS": "2",
    "POOL_SIZE": "1",
    "POOL_CHECK_INTERVAL": "5",
    "LEASE_SECONDS": "6",
    "POLL_INTERVAL": "0.5",
    "SHUTDOWN_GRACE_SECONDS": str(GRACE),
    "TOWER_STOP_GRACE_PERIOD": f"{GRACE + 30}s",
    # A credential, so the gateway gets as far as asking a tower (without one it answers
    # 503 first); an upstream nothing listens on, so no call could leave this host.
    "ANTHROPIC_API_KEY": "sk-ant-not-a-real-key",
    "ANTHROPIC_UPSTREAM": "http://127.0.0.1:9",
    # The egress test's sites are on this host's address on Docker's default bridge.
    "EGRESS_ALLOW_PRIVATE": "true",
}
EGRESS_PROFILE = """\
name = "egress-shell"
engine = "shell"

[egress]
allow = ["{allowed}"]
"""


@pytest.fixture(scope="module")
def stack_images(worker_image: str, gateway_image: str, egress_image: str) -> StackImages:
    return build_stack_images(worker_image, gateway_image, egress_image)


@pytest.fixture
def stack(docker_client: docker.DockerClient, stack_images: StackImages) -> Iterator[ComposeStack]:
    stack = ComposeStack(stack_images, SETTINGS)
    try:
        stack.up()
        yield stack
    except BaseException:
        print(stack.logs())
        raise
    finally:
        force_remove(docker_client, stack)


async def test_compose_stack_loses_no_job(
    stack: ComposeStack, docker_client: docker.DockerClient
) -> None:
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    async with httpx.AsyncClient(base_url=stack.base_url, headers=headers, timeout=60) as api:
        await _until_replicas(api, stack, docker_client, 3)
        await _register_shell(api)
        try:
            await _every_replica_runs_jobs(api, stack, docker_client)
            await _workers_reach_the_gateway_and_it_asks_the_towers(api)
            await _jobs_reach_allowed_hosts_through_the_egress_proxy(api, stack, docker_client)
            await _event_streams_pass_the_load_balancer_unbuffered(api)
            await _stopped_and_killed_towers_lose_no_job(api, stack, docker_client)
            await _scaling_down_and_up_loses_nothing(api, stack, docker_client)
        except BaseException:
            print(stack.logs())
            raise

    logs = stack.logs()  # the towers' side of the drain, should anything stay behind
    try:
        stack.down()
    except AssertionError as failed:
        raise AssertionError(f"{failed}\n{logs}") from None
    assert leftovers(docker_client, stack) == {
        "workers": [],
        "bundle volumes": [],
        "networks": [],
        "containers": [],
        "volumes": [],
    }, logs


# --- phases ------------------------------------------------------------------------------


async def _every_replica_runs_jobs(
    api: httpx.AsyncClient, stack: ComposeStack, client: docker.DockerClient
) -> None:
    """Dry runs through real workers until each replica has run some (claims race)."""
    replicas = _replica_prefixes(client, stack)
    assert len(replicas) == 3
    ran_by: set[str] = set()
    records: list[dict[str, Any]] = []
    for _ in range(8):
        batch = [await _submit_dry_run(api) for _ in range(6)]
        records += [await _wait_terminal(api, job_id) for job_id in batch]
        ran_by |= {_replica_of(record, replicas) for record in records}
        if ran_by == set(replicas):
            break
    assert {r["status"] for r in records} == {"completed"}, [describe(r) for r in records]
    assert {r["exit_code"] for r in records} == {0}
    assert ran_by == set(replicas), [describe(r) for r in records]


# A worker's view of the gateway (through its loopback forwarder to the gateway's socket,
# protocol.WORKER_GATEWAY_URL): its health, and a provider call with a token no job holds.
# 401 means the gateway asked a tower over the compose network and heard no (it
# says 503 when it cannot ask).
GATEWAY_PROBE = """\
import json, urllib.error, urllib.request
def status(path, headers):
    request = urllib.request.Request("http://127.0.0.1:4480" + path, headers=headers)
    try:
        return urllib.request.urlopen(request, timeout=20).status
    except urllib.error.HTTPError as error:
        return f"{error.code} {error.read().decode(errors='replace')}"[:300]
print(json.dumps({
    "health": status("/health", {}),
    "stranger": status("/anthropic/v1/models", {"x-api-key": "x" * 43}),
}))
"""


async def _workers_reach_the_gateway_and_it_asks_the_towers(api: httpx.AsyncClient) -> None:
    script = f"python3 - <<'EOF'\n{GATEWAY_PROBE}EOF\n"
    record = await _wait_terminal(api, await _submit_shell(api, script))
    assert record["status"] == "completed", describe(record)
    seen = json.loads(record["result"].strip().splitlines()[-1])
    assert (seen["health"], str(seen["stranger"])[:3]) == (200, "401"), seen


async def _jobs_reach_allowed_hosts_through_the_egress_proxy(
    api: httpx.AsyncClient, stack: ComposeStack, client: docker.DockerClient
) -> None:
    """The egress service, asking the towers on EGRESS_LISTEN: a job whose allow-list
    names the HTTPS site reaches it, and is refused the HTTP one; both decisions are its
    events and on its record. The sites are on this host, under names only the proxy
    resolves (the test's override file)."""
    health = (await api.get("/health")).json()
    assert health["checks"]["egress"] == "ok", health
    proxy = client.containers.get(stack.egress_container)
    found = proxy.exec_run(["getent", "hosts", ALLOWED])
    assert found.exit_code == 0, found.output
    address = found.output.decode().split()[0]
    with site(address, ALLOWED) as https, site(address) as http:
        profile = EGRESS_PROFILE.format(allowed=f"{ALLOWED}:{https.port}")
        answer = await api.put("/configs/profile/egress-shell", json={"content": profile})
        assert answer.status_code in (200, 201), answer.text
        script = (
            f"curl -sS --max-time 30 -k --pinnedpubkey 'sha256//{https.pin}' {https.url(ALLOWED)}"
            f"; curl -sS --max-time 30 -o /dev/null -w 'refused=%{{http_code}}\\n'"
            f" {http.url(REFUSED, '/secret')}"
            # An allowed request's event is written when its end reaches a tower, while the
            # job still runs.
            "; sleep 2"
        )
        body = {"engine": "shell", "profile": "egress-shell", "prompt": script}
        record = await _wait_terminal(api, await _submit_once_known(api, body))
    assert record["status"] == "completed", describe(record)
    assert https.marker in record["result"] and "refused=403" in record["result"], record
    assert (https.seen(), http.seen()) == (["/hello"], [])
    egress = record["egress"]
    assert egress["allowed"] == 1 and egress["bytes"] > 0, egress
    assert [(r["host"], r["port"]) for r in egress["refused"]] == [(REFUSED, http.port)]
    events = await collect(api, f"/jobs/{record['job_id']}/events")
    decisions = [(e.data["host"], e.data["allowed"]) for e in events if e.name == "egress"]
    assert sorted(decisions) == [(ALLOWED, True), (REFUSED, False)], decisions


async def _event_streams_pass_the_load_balancer_unbuffered(api: httpx.AsyncClient) -> None:
    """A job's first line reaches a client through the load balancer while it still runs."""
    job_id = await _submit_shell(api, "echo first; sleep 5; echo second")
    seen: list[tuple[str, dict[str, Any]]] = []
    status_at_first_line = None
    async with api.stream("GET", f"/jobs/{job_id}/events", timeout=DEADLINE) as stream:
        assert stream.status_code == 200
        kind = ""
        async for line in stream.aiter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                seen.append((kind, json.loads(line.removeprefix("data: "))))
                if kind == "log" and "first" in seen[-1][1]["text"] and not status_at_first_line:
                    status_at_first_line = (await _job(api, job_id))["status"]
                if kind == "state" and seen[-1][1]["status"] in TERMINAL:
                    break
    assert status_at_first_line == "running", seen
    text = "".join(data["text"] for kind, data in seen if kind == "log")
    assert (text, seen[-1][1]["status"]) == ("first\nsecond\n", "completed"), seen


async def _stopped_and_killed_towers_lose_no_job(
    api: httpx.AsyncClient, stack: ComposeStack, client: docker.DockerClient
) -> None:
    jobs = [await _submit_shell(api, "sleep 5; echo survived", max_attempts=2) for _ in range(6)]
    replicas = _replica_prefixes(client, stack)
    stopped, killed = await _two_replicas_running_jobs(api, jobs, replicas)

    stop = asyncio.to_thread(client.api.stop, replicas[stopped], timeout=GRACE + 30)
    kill = asyncio.to_thread(client.api.kill, replicas[killed])
    await asyncio.gather(stop, kill)

    records = {job_id: await _wait_terminal(api, job_id) for job_id in jobs}
    assert {r["status"] for r in records.values()} == {"completed"}, [
        describe(r) for r in records.values()
    ]
    assert {r["result"].strip() for r in records.values()} == {"survived"}
    # The stopped tower finished its own jobs in the grace: none of them ran twice.
    by_stopped = [r for r in records.values() if r["ran_by"].startswith(stopped)]
    assert by_stopped and {r["attempt"] for r in by_stopped} == {1}
    # The killed tower's jobs were finished by another replica: adopted from their
    # containers (attempt 1, docs/architecture.md) or, a container gone, run again.
    assert not [r for r in records.values() if r["ran_by"].startswith(f"{killed}-")], [
        describe(r) for r in records.values()
    ]
    await _terminal_states_are_final(api, records)


async def _scaling_down_and_up_loses_nothing(
    api: httpx.AsyncClient, stack: ComposeStack, client: docker.DockerClient
) -> None:
    stack.up("--scale", "tower=3")
    await _until_replicas(api, stack, client, 3)
    jobs = [await _submit_shell(api, "sleep 3; echo scaled") for _ in range(6)]
    await _until_any_running(api, jobs)
    # Long polls held through the load balancer while replicas go: none sees an error.
    waits = [asyncio.create_task(_long_poll(api, job_id)) for job_id in jobs]

    stack.up("--scale", "tower=1")
    assert len(service_containers(client, stack.project, "tower")) == 1
    more = [await _submit_dry_run(api) for _ in range(3)]
    stack.up("--scale", "tower=3")
    await _until_replicas(api, stack, client, 3)
    more += [await _submit_dry_run(api) for _ in range(3)]

    records = [await _wait_terminal(api, job_id) for job_id in jobs + more]
    assert {r["status"] for r in records} == {"completed"}, [describe(r) for r in records]
    assert {r["attempt"] for r in records} == {1}
    assert [await wait for wait in waits] == [200] * len(jobs)


# --- helpers -----------------------------------------------------------------------------


def _replica_prefixes(client: docker.DockerClient, stack: ComposeStack) -> dict[str, str]:
    """Running towers: the start of their replica id (the container's hostname) -> id."""
    towers = service_containers(client, stack.project, "tower")
    return {tower.attrs["Config"]["Hostname"]: tower.id for tower in towers}


def _replica_of(record: dict[str, Any], replicas: dict[str, str]) -> str:
    ran_by = str(record.get("ran_by"))
    matches = [prefix for prefix in replicas if ran_by.startswith(f"{prefix}-")]
    assert len(matches) == 1, (describe(record), list(replicas))
    return matches[0]


async def _until(check: Any, what: str, deadline: float = DEADLINE) -> Any:
    """Poll until `check()` returns something truthy; there is no event across the LB."""
    started = time.monotonic()
    while time.monotonic() - started < deadline:
        found = await check()
        if found:
            return found
        await asyncio.sleep(0.25)
    raise AssertionError(f"not within {deadline}s: {what}")


async def _until_serving(api: httpx.AsyncClient) -> None:
    async def serving() -> bool:
        try:
            return (await api.get("/openapi.json")).status_code == 200
        except httpx.HTTPError:
            return False

    await _until(serving, "the load balancer answers")


async def _until_replicas(
    api: httpx.AsyncClient, stack: ComposeStack, client: docker.DockerClient, count: int
) -> None:
    async def healthy() -> bool:
        towers = service_containers(client, stack.project, "tower")
        states = [t.attrs["State"].get("Health", {}).get("Status") for t in towers]
        return len(towers) == count and states == ["healthy"] * count

    await _until(healthy, f"{count} healthy towers")
    await _until_serving(api)


async def _register_shell(api: httpx.AsyncClient) -> None:
    for path, content in (
        ("/configs/engine/shell", SHELL_ENGINE),
        ("/configs/profile/shell", SHELL_PROFILE),
    ):
        response = await api.put(path, json={"content": content})
        assert response.status_code in (200, 201), response.text


async def _submit(api: httpx.AsyncClient, body: dict[str, Any]) -> str:
    response = await api.post("/jobs", json={"agent_id": "compose", **body})
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id


async def _submit_once_known(api: httpx.AsyncClient, body: dict[str, Any]) -> str:
    """Submit through the LB once the replica it reaches knows the profile just put
    through another one: a config reaches the other replicas by NOTIFY, a moment later."""

    async def submitted() -> str | None:
        response = await api.post("/jobs", json={"agent_id": "compose", **body})
        if response.status_code == 422 and "unknown profile" in response.text:
            return None
        assert response.status_code == 202, response.text
        job_id: str = response.json()["job_id"]
        return job_id

    job_id: str = await _until(submitted, f"profile {body['profile']!r} known to the replicas")
    return job_id


async def _submit_dry_run(api: httpx.AsyncClient) -> str:
    return await _submit(api, {"engine": "claude-code", "prompt": "hello", "dry_run": True})


async def _submit_shell(api: httpx.AsyncClient, script: str, max_attempts: int = 1) -> str:
    body = {"engine": "shell", "profile": "shell", "prompt": script, "max_attempts": max_attempts}
    return await _submit(api, body)


async def _job(api: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    # Through the load balancer while towers come and go: a refused hop is retried there.
    response = await api.get(f"/jobs/{job_id}")
    assert response.status_code == 200, response.text
    record: dict[str, Any] = response.json()
    return record


async def _wait_terminal(api: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    async def terminal() -> dict[str, Any] | None:
        try:
            record = await _job(api, job_id)
        except (httpx.HTTPError, AssertionError):
            return None  # a tower went away under this request; ask again
        return record if record["status"] in TERMINAL else None

    found: dict[str, Any] = await _until(terminal, f"{job_id} terminal")
    return found


async def _two_replicas_running_jobs(
    api: httpx.AsyncClient, jobs: list[str], replicas: dict[str, str]
) -> tuple[str, str]:
    async def two() -> tuple[str, str] | None:
        running = [r for r in [await _job(api, j) for j in jobs] if r["status"] == "running"]
        owners = sorted({_replica_of(r, replicas) for r in running})
        return (owners[0], owners[1]) if len(owners) >= 2 else None

    found: tuple[str, str] = await _until(two, "two replicas running jobs")
    return found


async def _long_poll(api: httpx.AsyncClient, job_id: str) -> int:
    response = await api.get(
        f"/jobs/{job_id}/wait", params={"timeout": DEADLINE}, timeout=DEADLINE + 30
    )
    return response.status_code


async def _until_any_running(api: httpx.AsyncClient, jobs: list[str]) -> None:
    async def running() -> bool:
        statuses = [(await _job(api, job_id))["status"] for job_id in jobs]
        return "running" in statuses

    await _until(running, "a job running")


async def _terminal_states_are_final(
    api: httpx.AsyncClient, records: dict[str, dict[str, Any]]
) -> None:
    """A lease and a reaper round later, no job's terminal record has changed."""
    await asyncio.sleep(float(SETTINGS["LEASE_SECONDS"]) * 2)
    for job_id, record in records.items():
        assert await _job(api, job_id) == record
