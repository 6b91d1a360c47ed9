"""`parpaing serve` runs the gateway itself: builds its image when missing, starts its
container, keeps it across restarts when nothing changed, replaces it when something did."""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest
from docker.errors import APIError, ImageNotFound, NotFound

from tests.e2e.gateway import GatewayNames, gateway_address, gateway_names
from tests.e2e.support import isolated_network
from tests.integration.test_cli_serve import PARPAING, cli_env, collect_stdout, serve, stop
from tower.gateway import tokens
from tower.gateway.container import HASH_LABEL


@pytest.fixture
def network(docker_client: docker.DockerClient) -> Iterator[str]:
    yield from isolated_network(docker_client)


@pytest.fixture
def names(docker_client: docker.DockerClient) -> Iterator[GatewayNames]:
    with gateway_names(docker_client) as found:
        yield found


@pytest.fixture
def fresh_tag(docker_client: docker.DockerClient, names: GatewayNames) -> Iterator[str]:
    """A gateway image tag nobody built: serve must build it."""
    tag = f"parpaing-gateway:e2e-{names.suffix}"
    yield tag
    with contextlib.suppress(NotFound, APIError):
        docker_client.containers.get(names.container).remove(force=True)
    with contextlib.suppress(ImageNotFound, APIError):
        docker_client.images.remove(tag)


def test_serve_builds_starts_keeps_and_replaces_the_gateway(
    database_url: str,
    network: str,
    names: GatewayNames,
    fresh_tag: str,
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
        GATEWAY_URL=names.url,
        GATEWAY_IMAGE=fresh_tag,
        GATEWAY_EGRESS_NET=names.egress_net,
        GATEWAY_AUTH_SOCKET=f"{names.socket_dir}/auth.sock",
        GATEWAY_SOCKET_VOLUME=names.socket_volume,
        EGRESS_MANAGED="false",  # tests/e2e/test_egress.py runs the proxy, named its own way
        ANTHROPIC_API_KEY="sk-ant-first",
    )
    with serve(tmp_path, env) as first:
        health = httpx.get(first.url + "/health", timeout=30).json()
        assert stop(first, signal.SIGTERM) == 0, first.output()
    assert f"gateway image {fresh_tag} is missing or outdated: building it" in first.output()
    assert f"starting the gateway container {names.container}" in first.output()
    assert health["checks"]["gateway"] == "ok", health
    created = docker_client.containers.get(names.container)
    assert created.status == "running"  # it outlives serve: workers of the next start use it
    # Workers reach it through its socket volume; its only network is its way out.
    assert set(created.attrs["NetworkSettings"]["Networks"]) == {names.egress_net}
    assert names.socket_volume in {m.get("Name") for m in created.attrs["Mounts"]}
    doctor = subprocess.run(
        [*PARPAING, "doctor"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    (line,) = [line for line in doctor.stdout.splitlines() if line[7:].startswith("gateway")]
    assert line.startswith("[ ok ]") and "/health answered 200" in line, doctor.stdout

    with serve(tmp_path, env) as second:
        # The kept gateway reaches the new tower through the socket it made again: an
        # unknown token is refused by tower (401), not "cannot check" (503).
        refused = httpx.post(
            gateway_address(docker_client, names) + "/anthropic/v1/messages",
            headers={"x-api-key": tokens.mint()},
            timeout=30,
        )
        collect_stdout(second)
        assert stop(second, signal.SIGTERM) == 0, second.output()
    assert refused.status_code == 401, refused.text
    assert "building it" not in second.output()
    assert "replacing" not in second.output()
    assert docker_client.containers.get(names.container).id == created.id

    with serve(tmp_path, {**env, "ANTHROPIC_API_KEY": "sk-ant-rotated"}) as third:
        health = httpx.get(third.url + "/health", timeout=30).json()
        assert stop(third, signal.SIGTERM) == 0, third.output()
    assert f"replacing the gateway container {names.container}" in third.output()
    replaced = docker_client.containers.get(names.container)
    assert replaced.id != created.id
    assert "ANTHROPIC_API_KEY=sk-ant-rotated" in replaced.attrs["Config"]["Env"]
    assert replaced.labels[HASH_LABEL] != created.labels[HASH_LABEL]
    assert health["checks"]["gateway"] == "ok", health
