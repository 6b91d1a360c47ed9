"""The egress proxy, end to end: a real squid container run by tower, real workers (no
network device: the proxy only through its socket), a real Claude Code agent whose Bash
tool runs curl (scripted by the fake LLM, through the gateway), and an HTTPS and an HTTP
site on this host under names only the proxy resolves (docs/egress.md)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import docker
import httpx
import pytest
from docker.errors import APIError, ImageNotFound, NotFound

from tests.e2e.agents import AgentRig, agent_rig, claude_job
from tests.e2e.egress import (
    ALLOWED,
    REFUSED,
    EgressNames,
    Site,
    egress_names,
    egress_settings,
    proxy_host_address,
    site,
)
from tests.e2e.gateway import GatewayNames, gateway_names
from tests.e2e.support import (
    describe,
    docker_settings,
    isolated_network,
    poll_until,
    run_job,
    shell_tower,
    submit,
    wait_terminal,
)
from tests.integration.test_cli_serve import PARPAING, cli_env, serve, stop
from tests.support.fake_llm import text, tool
from tests.support.sse import only_events

AGENT_PROFILE = """\
name = "egress-agent"
engine = "claude-code"
allowed_tools = ["Bash"]

[egress]
allow = ["{allowed}"]
"""

SHELL_PROFILE = """\
name = "egress-shell"
engine = "shell"

[egress]
allow = ["{allowed}"]
"""


@dataclass
class Sites:
    address: str  # this host's, on the proxy's network
    https: Site  # under ALLOWED
    http: Site  # under REFUSED

    @property
    def hosts(self) -> dict[str, str]:
        return {ALLOWED: self.address, REFUSED: self.address}

    @property
    def allowed_entry(self) -> str:
        return f"{ALLOWED}:{self.https.port}"


@pytest.fixture
def network(docker_client: docker.DockerClient, names: EgressNames) -> Iterator[str]:
    # Taken after the proxy's names, so its workers go first: the proxy's socket volume,
    # which they mount, can be removed after them.
    yield from isolated_network(docker_client)


@pytest.fixture
def names(docker_client: docker.DockerClient) -> Iterator[EgressNames]:
    with egress_names(docker_client) as found:
        yield found


@pytest.fixture
def sites(docker_client: docker.DockerClient, names: EgressNames) -> Iterator[Sites]:
    address = proxy_host_address(docker_client, names)
    with site(address, ALLOWED) as https, site(address) as http:
        yield Sites(address, https, http)


@pytest.fixture
def socket_dir() -> Iterator[str]:
    # Short: a Unix socket's path must fit in 107 bytes.
    found = tempfile.mkdtemp(prefix="peg-", dir="/tmp")
    yield found
    shutil.rmtree(found, ignore_errors=True)


async def put_profile(tower: httpx.AsyncClient, name: str, content: str) -> None:
    response = await tower.put(f"/configs/profile/{name}", json={"content": content})
    assert response.status_code in (200, 201), response.text


async def egress_events(tower: httpx.AsyncClient, job_id: str) -> list[dict[str, Any]]:
    """The job's egress events, read from its (finished) event stream."""
    found = []
    async with tower.stream("GET", f"/jobs/{job_id}/events", timeout=60) as reply:
        assert reply.status_code == 200
        async for event in only_events(reply):
            if event.name == "egress":
                found.append(event.data)
    return found


# --- a real agent --------------------------------------------------------------------------


@pytest.fixture
def gateway(docker_client: docker.DockerClient) -> Iterator[GatewayNames]:
    with gateway_names(docker_client) as found:
        yield found


@pytest.fixture
async def agent(
    docker_client: docker.DockerClient,
    database_url: str,
    network: str,
    gateway: GatewayNames,
    names: EgressNames,
    sites: Sites,
    gateway_image: str,
    worker_image: str,
    egress_image: str,
) -> AsyncIterator[AgentRig]:
    # The sites are on a private address: allowed here (the private test refuses it).
    proxy = egress_settings(names, egress_image, sites.hosts, egress_allow_private=True)
    images = (gateway_image, worker_image)
    async with agent_rig(docker_client, database_url, network, gateway, images, **proxy) as rig:
        await put_profile(
            rig.tower, "egress-agent", AGENT_PROFILE.format(allowed=sites.allowed_entry)
        )
        yield rig


async def test_an_agent_reaches_the_allowed_host_and_is_refused_the_other(
    agent: AgentRig, sites: Sites
) -> None:
    https, http = sites.https, sites.http
    # The pin proves the HTTPS site's own key reached curl: nothing in between decrypted it.
    command = (
        f"curl -sS --max-time 30 -k --pinnedpubkey 'sha256//{https.pin}' {https.url(ALLOWED)};"
        f" curl -sS --max-time 30 -o /dev/null -w 'refused=%{{http_code}}'"
        f" {http.url(REFUSED, '/secret')}"
    )
    agent.fake.set_script(
        [tool("Bash", command=command, description="fetch"), text("Fetched: {tool_result}")]
    )
    record = await claude_job(agent, "Fetch the two pages.", profile="egress-agent")

    assert record["status"] == "completed", describe(record)
    assert https.marker in record["result"], record["result"]
    assert "refused=403" in record["result"], record["result"]
    assert https.seen() == ["/hello"]
    assert http.seen() == []  # the proxy refused it: the site never heard of it
    egress = record["egress"]
    assert egress["allow"] == [sites.allowed_entry]
    assert egress["allowed"] == 1 and egress["bytes"] > 0, egress
    [refused] = egress["refused"]
    assert (refused["host"], refused["port"]) == (REFUSED, http.port)
    assert "not on this job's allow-list" in refused["reason"]
    events = await egress_events(agent.tower, record["job_id"])
    by_host = {event["host"]: event for event in events}
    assert by_host[ALLOWED]["allowed"] is True and by_host[ALLOWED]["bytes"] > 0, events
    assert by_host[ALLOWED]["port"] == https.port
    assert by_host[REFUSED]["allowed"] is False and by_host[REFUSED]["port"] == http.port
    metrics = (await agent.tower.get("/metrics")).text
    assert 'tower_egress_requests_total{decision="allowed",profile="egress-agent"} 1.0' in metrics
    assert 'tower_egress_requests_total{decision="refused",profile="egress-agent"} 1.0' in metrics


# --- shell jobs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShellRig:
    """What a shell job's tower with the proxy needs: one test's names, sites and images."""

    database_url: str
    network: str
    socket_dir: str
    names: EgressNames
    sites: Sites
    images: tuple[str, str]  # the proxy's, the worker's

    @contextlib.asynccontextmanager
    async def tower(self, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
        """A tower running the proxy (no gateway: shell jobs call no provider), the shell
        engine and the egress-shell profile (its allow-list: the HTTPS site)."""
        egress_image, worker_image = self.images
        proxy = egress_settings(self.names, egress_image, self.sites.hosts, **overrides)
        settings = docker_settings(
            self.database_url,
            self.network,
            worker_image=worker_image,
            gateway_auth_socket=f"{self.socket_dir}/auth.sock",
            **proxy,
        )
        async with shell_tower(settings) as tower:
            allowed = self.sites.allowed_entry
            await put_profile(tower, "egress-shell", SHELL_PROFILE.format(allowed=allowed))
            yield tower


@pytest.fixture
def rig(
    database_url: str,
    network: str,
    socket_dir: str,
    names: EgressNames,
    sites: Sites,
    egress_image: str,
    worker_image: str,
) -> ShellRig:
    return ShellRig(database_url, network, socket_dir, names, sites, (egress_image, worker_image))


async def test_no_route_but_the_proxy_and_a_finished_attempts_token_is_refused(
    docker_client: docker.DockerClient, rig: ShellRig
) -> None:
    sites, names = rig.sites, rig.names
    https, http = sites.https, sites.http
    async with rig.tower(egress_allow_private=True) as tower:
        # The first job uses its credentials (so the proxy has them cached), and shows them.
        first = await run_job(
            tower,
            f'curl -sS --max-time 30 -k {https.url(ALLOWED)} && echo "proxy=$HTTPS_PROXY"',
            profile="egress-shell",
        )
        assert first["status"] == "completed", describe(first)
        stale = first["result"].split("proxy=", 1)[1].strip()
        curl = "curl -sS --max-time 30 -k -o /dev/null"
        script = "\n".join(
            [
                # Straight to the site's address, ignoring the proxy: there is no route.
                f"{curl} --noproxy '*' http://{sites.address}:{http.port}/direct 2>&1",
                'echo "direct=$?"',
                # The first job's credentials, now that its attempt is over.
                f"{curl} -w 'stale=%{{http_connect}}\\n' -x '{stale}' {https.url(ALLOWED, '/x')}",
                # Its own, through the proxy the worker was told of.
                f"{curl} -w 'own=%{{http_code}}\\n' {https.url(ALLOWED, '/own')}",
            ]
        )
        second = await run_job(tower, script, profile="egress-shell")

    assert second["status"] == "completed", describe(second)
    output = second["result"]
    assert "direct=7" in output, output  # curl: could not connect
    assert "Network is unreachable" in output or "Couldn't connect" in output, output
    assert "own=200" in output, output
    stale_answer = output.split("stale=", 1)[1][:3]
    assert stale_answer in ("403", "407"), output
    assert http.seen() == []
    assert https.seen() == ["/hello", "/own"]
    # The proxy's log lines, on its output, hold neither the tokens nor tower's tags
    # (whoever holds a tag could report its request's end).
    logs = docker_client.containers.get(names.container).logs().decode(errors="replace")
    assert " counted " in logs, logs
    assert stale.rsplit("@", 1)[0].rsplit(":", 1)[1] not in logs
    assert re.search(r"[0-9]+\.[0-9a-f]{32}", logs) is None, logs


async def test_an_allowed_name_resolving_to_a_private_address_is_refused(
    rig: ShellRig,
) -> None:
    async with rig.tower() as tower:
        record, events = await connect_to_allowed(tower, rig.sites.https)

    refused = the_one_refusal(record, events, rig.sites.https)
    assert rig.sites.address in refused["reason"] and "EGRESS_ALLOW_PRIVATE" in refused["reason"]


async def connect_to_allowed(
    tower: httpx.AsyncClient, https: Site
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A job's curl to the allowed name over HTTPS: its record and its egress events."""
    record = await run_job(
        tower,
        f"curl -sS --max-time 30 -k -w '\\nconnect=%{{http_connect}}' {https.url(ALLOWED)}; echo",
        profile="egress-shell",
    )
    return record, await egress_events(tower, record["job_id"])


def the_one_refusal(
    record: dict[str, Any], events: list[dict[str, Any]], https: Site
) -> dict[str, Any]:
    """The record's one refused host, checked against the job's output, the site and the
    job's one egress event."""
    assert record["status"] == "completed", describe(record)
    assert https.seen() == []
    assert "connect=403" in record["result"], record["result"]
    [refused] = record["egress"]["refused"]
    assert refused["host"] == ALLOWED and refused["port"] == https.port
    assert [event["allowed"] for event in events] == [False]
    assert events[0]["reason"] == refused["reason"]
    return dict(refused)


async def test_a_name_resolving_elsewhere_when_squid_connects_is_refused_by_squid(
    docker_client: docker.DockerClient, rig: ShellRig
) -> None:
    """DNS rebinding, without DNS: squid reads /etc/hosts once, at its start, and the
    helper at each request. Rewriting the proxy's hosts file once it runs gives tower's
    check a public address and squid's connection the site's private one, as a DNS answer
    changing between the two lookups would: squid's own address rule must refuse it."""
    async with rig.tower() as tower:
        _rebind(docker_client, rig.names.container, ALLOWED, PUBLIC_ADDRESS)
        record, events = await connect_to_allowed(tower, rig.sites.https)

    refused = the_one_refusal(record, events, rig.sites.https)
    assert "non-public address when the proxy connected" in refused["reason"], refused
    # Tower said yes (it saw the public address); squid's refusal ended the request.
    assert record["egress"]["allowed"] == 1 and record["egress"]["bytes"] == 0


PUBLIC_ADDRESS = "93.184.215.14"  # global unicast; nothing is ever sent to it


def _rebind(client: docker.DockerClient, container: str, name: str, address: str) -> None:
    """Point `name` at `address` in the running proxy's /etc/hosts, written in place (the
    container mounts the file itself: its inode must stay)."""
    hosts = Path(client.containers.get(container).attrs["HostsPath"])
    if not os.access(hosts, os.W_OK):
        pytest.skip(f"{hosts} is not writable here (a remote Docker daemon?)")
    lines = [
        f"{address}\t{name}" if name in line.split()[1:] else line
        for line in hosts.read_text().splitlines()
    ]
    with hosts.open("r+") as file:
        file.write("\n".join(lines) + "\n")
        file.truncate()


async def test_a_job_without_an_allow_list_gets_no_proxy(
    rig: ShellRig,
) -> None:
    async with rig.tower(egress_allow_private=True) as tower:
        record = await run_job(tower, 'env | grep -ic proxy; echo "count=$?"')
    assert record["status"] == "completed", describe(record)
    assert record["result"].strip().endswith("count=1"), record["result"]  # grep found none
    assert record["egress"] is None


async def test_tower_keeps_the_proxy_it_would_make_and_replaces_another(
    docker_client: docker.DockerClient, rig: ShellRig
) -> None:
    container = rig.names.container
    async with rig.tower() as tower:
        health = (await tower.get("/health")).json()
    assert health["checks"]["egress"] == "ok", health
    first = docker_client.containers.get(container).id
    async with rig.tower() as tower:  # the same settings: the same container
        assert (await tower.get("/health")).json()["checks"]["egress"] == "ok"
    assert docker_client.containers.get(container).id == first
    async with rig.tower(egress_auth_cache_seconds=2) as tower:  # another: replaced
        assert (await tower.get("/health")).json()["checks"]["egress"] == "ok"
    replaced = docker_client.containers.get(container)
    assert replaced.id != first
    assert replaced.attrs["Config"]["Env"].count("EGRESS_AUTH_CACHE_SECONDS=2") == 1


async def test_a_proxy_restarted_under_a_running_job_leaves_none_of_its_requests_open(
    docker_client: docker.DockerClient, rig: ShellRig
) -> None:
    """The proxy restarts (its restart policy, compose's service, an operator) while a job
    runs: the requests it held ended with it, and their log lines never come. With one
    connection allowed, a request still counted open from before would refuse the job
    every request after: the new proxy's first question closes it."""
    https = rig.sites.https
    gate = https.url(ALLOWED, "/gate")
    # The job asks the site's gate through the proxy until it opens (at most a minute).
    script = (
        "for i in $(seq 200); do"
        f" code=$(curl -s -k -o /dev/null --max-time 10 -w '%{{http_code}}' {gate});"
        ' [ "$code" = 200 ] && { echo through; exit 0; }; sleep 0.3; done; exit 1'
    )
    async with rig.tower(egress_allow_private=True, egress_max_connections=1) as tower:
        job_id = await submit(tower, script, profile="egress-shell")
        await poll_until(lambda: _seen(https, "/gate", 1), "the job asking through the proxy")
        # A request the proxy holds when it dies (the job's own end too fast to catch).
        await _hold_open(rig.database_url, job_id)
        await poll_until(lambda: _limited(tower, job_id), "the held request refusing the job")
        docker_client.containers.get(rig.names.container).restart(timeout=2)
        asked = https.seen().count("/gate")
        await poll_until(lambda: _seen(https, "/gate", asked + 1), "the job let through again")
        https.gate.set()
        record = await wait_terminal(tower, job_id)

    assert record["status"] == "completed", describe(record)
    assert record["result"].strip() == "through", record["result"]
    assert record["egress"]["limited"] == "connections"


async def _seen(site: Site, path: str, times: int) -> bool:
    return site.seen().count(path) >= times


async def _limited(tower: httpx.AsyncClient, job_id: str) -> bool:
    egress = (await tower.get(f"/jobs/{job_id}")).json()["egress"]
    return egress is not None and egress["limited"] == "connections"


async def _hold_open(database_url: str, job_id: str) -> None:
    """Count one more of the job's requests open, let through by the proxy now running."""
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(
            "UPDATE job_egress SET open_serials = open_serials || 2147483647 WHERE job_id = $1",
            job_id,
        )
    finally:
        await connection.close()


@pytest.fixture
def fresh_egress_tag(docker_client: docker.DockerClient, names: EgressNames) -> Iterator[str]:
    """An egress image tag nobody built: serve must build it."""
    tag = f"parpaing-egress:e2e-{names.suffix}"
    yield tag
    with contextlib.suppress(NotFound, APIError):
        docker_client.containers.get(names.container).remove(force=True)
    with contextlib.suppress(ImageNotFound, APIError):
        docker_client.images.remove(tag)


def test_serve_builds_and_starts_the_proxy(
    database_url: str,
    network: str,
    socket_dir: str,
    names: EgressNames,
    sites: Sites,
    fresh_egress_tag: str,
    worker_image: str,
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> None:
    env = cli_env(
        DATABASE_URL=database_url,
        TOWER_RUNNER="docker",
        STATE_DIR=str(tmp_path / "state"),
        WORKER_IMAGE=worker_image,
        WORKER_NET=network,
        POOL_SIZE="0",
        GATEWAY_MANAGED="false",
        GATEWAY_AUTH_SOCKET=f"{socket_dir}/auth.sock",
        **{
            name.upper(): str(value)
            for name, value in egress_settings(names, fresh_egress_tag, sites.hosts).items()
        },
    )
    with serve(tmp_path, env) as served:
        health = httpx.get(served.url + "/health", timeout=30).json()
        doctor = subprocess.run(
            [*PARPAING, "doctor"], env=env, capture_output=True, text=True, timeout=120
        )
        assert stop(served, signal.SIGTERM) == 0, served.output()
    (line,) = [line for line in doctor.stdout.splitlines() if "egress proxy" in line]
    assert line.startswith("[ ok ]") and "reaches tower" in line, doctor.stdout
    output = served.output()
    assert f"egress image {fresh_egress_tag} is missing or outdated: building it" in output
    assert f"starting the egress proxy {names.container}" in output, output
    assert health["checks"]["egress"] == "ok", health
    proxy = docker_client.containers.get(names.container)
    assert proxy.status == "running"  # it outlives serve, as the gateway does
    assert set(proxy.attrs["NetworkSettings"]["Networks"]) == {names.net}
    assert names.socket_volume in {m.get("Name") for m in proxy.attrs["Mounts"]}
