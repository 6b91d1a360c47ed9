"""A worker's only peer, the gateway, through a socket volume; no network at all.

Workers run with `network_mode: none`: loopback is their only network device, so they
have no address another container, the host or the internet could be reached from, nor
one where another worker could reach them. The gateway's nginx listens on a Unix socket
in a Docker volume (GATEWAY_SOCKET_VOLUME): read-write in the gateway, read-only in
workers (connecting to a socket needs no write access to its mount); worker/forwarder.py
carries the engines' loopback HTTP to it. The volume is a tmpfs owned by the gateway's
user (Debian's www-data): nothing of it touches the disk, and only nginx writes there.

Until this change workers sat on an internal bridge (WORKER_NET). A tower starting on a
daemon that still has that bridge removes it once nothing is attached to it any more.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import docker
import requests
from docker.errors import APIError, DockerException, NotFound

from tower.errors import one_line
from tower.execution.docker.containers import DockerFailure

ROLE_LABEL = "parpaing.role"
SOCKET_VOLUME_ROLE = "gateway-socket"
# Debian's www-data, which the gateway's nginx runs as (gateway/Dockerfile).
GATEWAY_UID = 33


def socket_volume_options(uid: int) -> dict[str, str]:
    """A small tmpfs owned by `uid`, the user of whoever makes the socket in it."""
    return {
        "type": "tmpfs",
        "device": "tmpfs",
        "o": f"size=1m,uid={uid},gid={uid},mode=0755,nosuid,nodev,noexec",
    }


SOCKET_VOLUME_OPTIONS = socket_volume_options(GATEWAY_UID)
# What marked the workers' bridge of earlier versions (the compose file made it alike).
OLD_BRIDGE_OPTION = "com.docker.network.bridge.inhibit_ipv4"


def ensure_socket_volume(
    client: docker.DockerClient,
    name: str,
    uid: int = GATEWAY_UID,
    role: str = SOCKET_VOLUME_ROLE,
) -> None:
    """Create the gateway's socket volume `name` (or, given its `uid` and `role`, another
    socket volume: the egress proxy's) unless it exists (replicas may race: the loser's
    409 is fine). An existing volume is used as it is: compose declares its own."""
    try:
        client.api.inspect_volume(name)
        return
    except NotFound:
        pass
    except (DockerException, requests.RequestException) as exc:
        raise DockerFailure(f"socket volume {name}: {one_line(exc, 500)}") from exc
    try:
        client.api.create_volume(
            name,
            driver="local",
            driver_opts=socket_volume_options(uid),
            labels={ROLE_LABEL: role},
        )
    except APIError as exc:
        if exc.status_code != 409:
            raise DockerFailure(f"socket volume {name}: {one_line(exc, 500)}") from exc
    except (DockerException, requests.RequestException) as exc:
        raise DockerFailure(f"socket volume {name}: {one_line(exc, 500)}") from exc


def retire_worker_network(client: docker.DockerClient, name: str) -> bool:
    """Remove the workers' bridge `name` an earlier version made, once nothing is attached
    to it (workers of that version still running keep it, and the next start retries).
    Only a bridge that looks like ours (internal, without a host address) is touched.
    Best effort: True when it was removed."""
    try:
        found = [n for n in client.api.networks(names=[name]) if n.get("Name") == name]
        removed = False
        for network in found:
            details: Mapping[str, Any] = client.api.inspect_network(network["Id"])
            if _was_workers_bridge(details) and not details.get("Containers"):
                with contextlib.suppress(NotFound):
                    client.api.remove_network(network["Id"])
                    removed = True
        return removed
    except (DockerException, requests.RequestException):
        return False  # in use after all, or Docker is busy: left for the next start


def _was_workers_bridge(network: Mapping[str, Any]) -> bool:
    options = network.get("Options") or {}
    return network.get("Internal") is True and options.get(OLD_BRIDGE_OPTION) == "true"
