"""The workers' network: an internal bridge the host has no address on.

`internal` alone stops routing to the outside, but the host still holds the bridge's
gateway address, so a worker could reach services listening on the host (tower,
PostgreSQL). With `inhibit_ipv4` the host takes no address on the bridge at all: the
only peers a worker has are other containers on it (the gateway, in its own issue).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from typing import Any

import docker
import requests
from docker.errors import APIError, DockerException, NotFound

from tower.db.pool import Pool
from tower.execution.docker import queries as docker_queries
from tower.execution.docker.client import DockerCalls
from tower.execution.docker.containers import DockerFailure

INHIBIT_IPV4 = "com.docker.network.bridge.inhibit_ipv4"
NETWORK_LABEL = "parpaing.role"
NETWORK_ROLE = "workers"


class UnsafeWorkerNetwork(DockerFailure):
    """A network of that name exists but is not isolated; tower will not use it."""


async def ensure_worker_network_once(
    db: Pool, calls: DockerCalls, name: str, labels: Mapping[str, str] | None = None
) -> str:
    """ensure_worker_network, one replica at a time (they share the database, and so
    this lock), so that racing replicas never create two networks of one name."""
    async with db.acquire() as connection:
        await connection.execute(docker_queries.NETWORK_LOCK, name)
        try:
            return await calls(ensure_worker_network, name, labels)
        finally:
            await connection.execute(docker_queries.NETWORK_UNLOCK, name)


def ensure_worker_network(
    client: docker.DockerClient, name: str, labels: Mapping[str, str] | None = None
) -> str:
    """The id of the isolated workers network `name`, creating it if needed.

    Replicas call it through ensure_worker_network_once. Should two networks of the name
    exist anyway (made by hand, or by a tower of an older version), every caller keeps
    the oldest and removes the others, so all converge on the same network."""
    try:
        found = _named(client, name)
        if not found:
            _create(client, name, labels)
            found = _named(client, name)
        if not found:
            raise DockerFailure(f"workers network {name}: created but not found afterwards")
        chosen = _settle(client, found)
        details: dict[str, Any] = client.api.inspect_network(chosen)
    except (DockerException, requests.RequestException) as exc:
        raise DockerFailure(f"workers network {name}: {' '.join(str(exc).split())}") from exc
    _check_isolated(name, details)
    return chosen


def _named(client: docker.DockerClient, name: str) -> list[dict[str, Any]]:
    # Docker's name filter also matches substrings; keep exact names only.
    return [n for n in client.api.networks(names=[name]) if n.get("Name") == name]


def _create(client: docker.DockerClient, name: str, labels: Mapping[str, str] | None) -> None:
    try:
        client.api.create_network(
            name,
            driver="bridge",
            internal=True,
            check_duplicate=True,
            options={INHIBIT_IPV4: "true"},
            labels={**(labels or {}), NETWORK_LABEL: NETWORK_ROLE},
        )
    except APIError as exc:
        if exc.status_code != 409:  # 409: another replica made it first
            raise


def _settle(client: docker.DockerClient, found: list[dict[str, Any]]) -> str:
    """The oldest of same-named networks; the younger ones (a lost race) are removed."""
    ordered = sorted(found, key=lambda n: (_created(n), str(n["Id"])))
    for extra in ordered[1:]:
        # Already removed by another replica, or in use: either way not ours to force.
        with contextlib.suppress(NotFound, APIError):
            client.api.remove_network(extra["Id"])
    return str(ordered[0]["Id"])


def _created(network: Mapping[str, Any]) -> str:
    """Creation time as a sortable string: Docker trims trailing zeros of the fraction."""
    stamp = str(network.get("Created", ""))
    match = re.fullmatch(r"(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(.*)", stamp)
    if match is None:
        return stamp
    whole, fraction, zone = match.groups()
    return f"{whole}.{(fraction or '').ljust(9, '0')}{zone}"


def _check_isolated(name: str, network: Mapping[str, Any]) -> None:
    """Refuse a same-named network someone made without our isolation."""
    options = network.get("Options") or {}
    if network.get("Internal") is not True or options.get(INHIBIT_IPV4) != "true":
        raise UnsafeWorkerNetwork(
            f"network {name} exists but is not internal with {INHIBIT_IPV4}=true; "
            "remove it (docker network rm) or set WORKER_NET to another name"
        )
