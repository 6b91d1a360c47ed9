"""The workers' network: an internal bridge the host has no address on.

`internal` alone stops routing to the outside, but the host still holds the bridge's
gateway address, so a worker could reach services listening on the host (tower,
PostgreSQL). With `inhibit_ipv4` the host takes no address on the bridge at all: the
only peers a worker has are other containers on it (the gateway, in its own issue).
"""

from __future__ import annotations

from collections.abc import Mapping

import docker
import requests
from docker.errors import APIError, DockerException, NotFound

from tower.execution.docker.containers import DockerFailure

INHIBIT_IPV4 = "com.docker.network.bridge.inhibit_ipv4"
NETWORK_LABEL = "parpaing.role"
NETWORK_ROLE = "workers"


class UnsafeWorkerNetwork(DockerFailure):
    """A network of that name exists but is not isolated; tower will not use it."""


def ensure_worker_network(
    client: docker.DockerClient, name: str, labels: Mapping[str, str] | None = None
) -> str:
    """The id of the isolated workers network `name`, creating it if needed.

    Safe when replicas race: Docker refuses a second network of the same name with a
    conflict, and the loser then uses the winner's network."""
    try:
        existing = _find(client, name)
        if existing is None:
            existing = _create_or_reread(client, name, labels)
    except (DockerException, requests.RequestException) as exc:
        if isinstance(exc, UnsafeWorkerNetwork):
            raise
        raise DockerFailure(f"workers network {name}: {' '.join(str(exc).split())}") from exc
    _check_isolated(name, existing)
    return str(existing["Id"])


def _find(client: docker.DockerClient, name: str) -> dict[str, object] | None:
    try:
        found: dict[str, object] = client.api.inspect_network(name)
    except NotFound:
        return None
    return found


def _create_or_reread(
    client: docker.DockerClient, name: str, labels: Mapping[str, str] | None
) -> dict[str, object]:
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
        if exc.status_code != 409:
            raise
    created = _find(client, name)
    if created is None:
        raise DockerFailure(f"workers network {name}: created but not found afterwards")
    return created


def _check_isolated(name: str, network: Mapping[str, object]) -> None:
    """Refuse a same-named network someone made without our isolation."""
    options = network.get("Options") or {}
    assert isinstance(options, dict)
    if network.get("Internal") is not True or options.get(INHIBIT_IPV4) != "true":
        raise UnsafeWorkerNetwork(
            f"network {name} exists but is not internal with {INHIBIT_IPV4}=true; "
            "remove it (docker network rm) or set WORKER_NET to another name"
        )
