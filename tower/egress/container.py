"""The egress proxy's container: created, kept, replaced and probed by tower, like the
gateway's (tower/gateway/container.py, whose network helper this reuses; the life both
share is tower/execution/docker/sidecar.py).

- its name is EGRESS_CONTAINER; a label holds a digest of everything it was created with
  (image ID, environment, mounts, extra hosts, options): when that differs from what tower
  would create now, it is replaced, otherwise left running;
- it sits on its own bridge (EGRESS_NET) to reach what allow-lists name; workers, which
  have no network, reach it through a Unix socket its relay makes in the socket volume
  (EGRESS_SOCKET_VOLUME), mounted read-write here and read-only in them;
- its helpers ask tower through the token-check sockets' directory, mounted read-only,
  where each replica answers on an egress slot of its own (tower/egress/listener.py);
- tower probes it on port 3129 from the host: squid answers only when its helper reached
  the asking replica's slot, so one probe checks squid, the helper and the way back.
Replicas sharing a Docker host do this one at a time (a PostgreSQL advisory lock).

Compose runs the proxy as a service of its own (EGRESS_MANAGED=false, EGRESS_LISTEN):
tower then only probes it, by its container's name.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import docker
import requests
from docker.errors import DockerException
from docker.models.containers import Container

from tower.db.pool import Pool
from tower.egress.listener import egress_socket
from tower.errors import Invalid, TowerError, one_line
from tower.execution.docker import sidecar
from tower.execution.docker.client import DockerCalls
from tower.execution.docker.containers import DockerFailure
from tower.execution.docker.network import ensure_socket_volume
from tower.execution.docker.probe import Probe
from tower.execution.protocol import EGRESS_SOCKET_DIR
from tower.gateway.container import ensure_egress_network
from tower.gateway.listener import AUTH_SLOTS
from tower.settings import Settings, egress_managed, egress_socket_volume

log = logging.getLogger(__name__)

EGRESS_ROLE = "egress-proxy"
# Bump when the container options below change, so running proxies are replaced.
EGRESS_OPTIONS_VERSION = 1
PROBE_PORT = 3129
PROBE_PATH = "/squid-internal-mgr/info"
SLOT_HEADER = "X-Parpaing-Slot"
SOCKET_MOUNT = "/run/parpaing"
# Debian's proxy user, squid's, which owns the workers' socket (egress/Dockerfile).
PROXY_UID = 13
HEALTH_TIMEOUT = 2.0
# What squid's probe port means by a 403: its helper got no answer from this replica.
REFUSED = {403: "the egress proxy answers but cannot reach this tower"}
READY_TIMEOUT = 30.0

Say = sidecar.Say


class EgressFailure(DockerFailure):
    """The proxy container could not be made to run; the message says why."""


@dataclass(frozen=True)
class EgressSpec:
    name: str
    image: str
    environment: Mapping[str, str]
    socket_dir: str
    workers_socket_volume: str
    net: str
    extra_hosts: Mapping[str, str]

    def digest(self) -> str:
        return sidecar.digest(self, EGRESS_OPTIONS_VERSION)


def extra_hosts(text: str) -> dict[str, str]:
    """EGRESS_EXTRA_HOSTS ("name=address,..."): names the proxy resolves to addresses."""
    found: dict[str, str] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, equals, address = item.partition("=")
        if not equals or not name.strip() or not address.strip():
            raise Invalid(
                f"EGRESS_EXTRA_HOSTS: {item!r} is not name=address", field="egress_extra_hosts"
            )
        found[name.strip().lower()] = address.strip()
    return found


def egress_spec(settings: Settings, image_id: str) -> EgressSpec:
    socket = egress_socket(settings)
    environment = {
        "TOWER_SOCKET": f"{SOCKET_MOUNT}/{socket.name}",
        "TOWER_SLOTS": str(AUTH_SLOTS),
        "EGRESS_AUTH_CACHE_SECONDS": str(int(settings.egress_auth_cache_seconds)),
        "EGRESS_MAX_BYTES": str(int(settings.egress_max_bytes)),
        # Which destinations squid itself refuses (egress/render.py).
        "EGRESS_ALLOW_PRIVATE": "true" if settings.egress_allow_private else "false",
    }
    return EgressSpec(
        name=settings.egress_container,
        image=image_id,
        environment=environment,
        socket_dir=str(socket.parent),
        workers_socket_volume=egress_socket_volume(settings) or "",
        net=settings.egress_net,
        extra_hosts=extra_hosts(settings.egress_extra_hosts),
    )


def container_options(spec: EgressSpec) -> dict[str, Any]:
    """Keyword arguments for containers.create: squid and its relay as proxy, nothing
    writable but /tmp and the workers' socket volume, no capabilities."""
    return {
        **sidecar.locked_down(spec, EGRESS_ROLE, pids_limit=512),
        "environment": dict(spec.environment),
        "volumes": {
            spec.socket_dir: {"bind": SOCKET_MOUNT, "mode": "ro"},
            spec.workers_socket_volume: {"bind": EGRESS_SOCKET_DIR, "mode": "rw"},
        },
        "extra_hosts": dict(spec.extra_hosts),
        "network": spec.net,
    }


# --- the runner's host ----------------------------------------------------------------------


@dataclass(frozen=True)
class EgressHost:
    """The proxy as the Docker runner sees it: a part of its Host (tower/runners.RunnerHost)."""

    db: Pool
    settings: Settings
    # This replica's egress slot (listener.EgressListener.slot); None: it has none.
    slot: int | None = None

    async def setup(self, calls: DockerCalls) -> None:
        """Run the proxy (unless it is not tower's to run: compose). Without it jobs
        still run, but none reaches anything through it: that is reported (log, /health)."""
        if not egress_managed(self.settings):
            return
        try:
            await ensure_egress_once(self.db, calls, self.settings, self.slot)
        except TowerError as problem:
            log.error("%s; jobs with an allow-list reach nothing until fixed", problem.message)

    def probe(self, client: docker.DockerClient) -> Probe:
        return probe_egress(self.settings, self.slot, HEALTH_TIMEOUT, client)


async def ensure_egress_once(
    db: Pool, calls: DockerCalls, settings: Settings, slot: int | None
) -> str:
    """ensure_egress, one replica at a time. (The requests a replaced container held open
    are closed by the new one's first question about each job: tower/egress/queries.py
    OPEN_REQUEST, as after any restart of the proxy.)"""
    key = f"egress:{settings.egress_container}"
    return await sidecar.one_at_a_time(db, calls, key, ensure_egress, settings, slot)


def ensure_egress(
    client: docker.DockerClient, settings: Settings, slot: int | None = None, say: Say = log.info
) -> str:
    """The running proxy container's id: created or replaced as needed; replaced too when
    it runs but cannot reach this replica's slot (a state dir made again)."""
    image = f"egress image {settings.egress_image}"
    with sidecar.failures_as(EgressFailure, image, "egress proxy container"):
        image_id = str(client.images.get(settings.egress_image).id)
        spec = egress_spec(settings, image_id)
        ensure_egress_network(client, spec.net)
        ensure_socket_volume(client, spec.workers_socket_volume, PROXY_UID, EGRESS_ROLE)
        options = container_options(spec)
        wanted = sidecar.Sidecar("egress proxy", spec, options, READY_TIMEOUT, EgressFailure)
        # Squid answers its probe port only when its helper reached this replica's slot.
        ready = functools.partial(probe_egress, settings, slot, HEALTH_TIMEOUT, client)
        container = sidecar.current(client, wanted, say)
        if container is not None and not _reaches_tower(wanted, container, ready):
            say(f"replacing the egress proxy {spec.name}: it cannot reach this tower")
            sidecar.remove(container)
            container = None
        if container is None:
            container = sidecar.create(client, wanted, say)
            # A setting render.py refused: it exits, and its last words name the variable.
            sidecar.wait_ready(wanted, container, ready, say)
        return str(container.id)


def _reaches_tower(
    wanted: sidecar.Sidecar, container: Container, ready: Callable[[], Probe]
) -> bool:
    """Whether the kept container answers this replica's probe (within READY_TIMEOUT:
    it may be starting)."""
    try:
        sidecar.wait_ready(wanted, container, ready, lambda _: None)
    except EgressFailure:
        return False
    return True


# --- health -----------------------------------------------------------------------------


def probe_egress(
    settings: Settings,
    slot: int | None,
    timeout: float = HEALTH_TIMEOUT,
    client: docker.DockerClient | None = None,
) -> Probe:
    """Does the proxy answer, and reach this replica (slot `slot`; None: slot 0)? Blocking.
    Asked at the container's address on its network: squid's probe port answers 200 only
    when its helper got tower's answer through the mounted sockets. A proxy tower does not
    run (compose) is asked by its container's name, on the network tower shares with it,
    and answers 200 when its helper reached any replica."""
    if egress_managed(settings):
        try:
            address = _address(settings, client)
        except (DockerException, requests.RequestException) as exc:
            return Probe(False, f"Docker: {one_line(exc)}")
        if address is None:
            return Probe(False, f"container {settings.egress_container} is not running")
    else:
        address = settings.egress_container
    url = f"http://{address}:{PROBE_PORT}{PROBE_PATH}"
    found = sidecar.ask(url, timeout, {SLOT_HEADER: str(slot or 0)}, REFUSED)
    return Probe(True, "the egress proxy reaches tower") if found.ok else found


def _address(settings: Settings, client: docker.DockerClient | None) -> str | None:
    name, net = settings.egress_container, settings.egress_net
    _state, address = sidecar.locate(client, name, net, int(HEALTH_TIMEOUT) + 1)
    return address
