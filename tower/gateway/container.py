"""The gateway container: created and updated by tower (all-in-one mode).

`parpaing serve` builds the gateway image when it is missing (images.py); tower then
makes sure one container of it runs with the configuration this tower holds:
- its name is GATEWAY_CONTAINER, else GATEWAY_URL's host;
- a label holds a digest of everything it was created with (image ID, environment,
  mounts, options): when that differs from what tower would create now (a rebuilt image,
  a new key), the container is replaced, otherwise it is left running;
- it sits on an ordinary bridge network (GATEWAY_EGRESS_NET) to reach the providers;
- workers, which have no network, reach it through a Unix socket its nginx makes in the
  socket volume (GATEWAY_SOCKET_VOLUME), mounted read-write here and read-only in them;
- tower's token checks reach it through the auth socket's directory, mounted read-only,
  where each replica on this host answers on a socket of its own (listener.py);
- it must reach this replica's socket end to end: a container whose mount shows another
  directory (the state dir was deleted and made again) is replaced, even when its
  configuration is unchanged.
Replicas sharing a Docker host do this one at a time (a PostgreSQL advisory lock). The
life it shares with the egress proxy's container is tower/execution/docker/sidecar.py.
Compose runs the gateway itself (GATEWAY_MANAGED=false), socket volume included; tower
then has nothing to do for it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import docker
import requests
from docker.errors import APIError, DockerException
from docker.models.containers import Container

from tower.db.pool import Pool
from tower.errors import TowerError
from tower.execution.docker import sidecar
from tower.execution.docker.client import DockerCalls
from tower.execution.docker.containers import DockerFailure
from tower.execution.docker.hardening import HASH_LABEL as HASH_LABEL  # tests read it here
from tower.execution.docker.network import ensure_socket_volume
from tower.execution.docker.probe import Probe
from tower.execution.protocol import GATEWAY_SOCKET_DIR
from tower.gateway import tokens
from tower.gateway.listener import AUTH_SLOTS
from tower.gateway.providers import ALL_VARIABLES
from tower.settings import (
    Settings,
    gateway_auth_socket,
    gateway_container,
    gateway_socket_volume,
)

log = logging.getLogger(__name__)

ROLE_LABEL = "parpaing.role"
GATEWAY_ROLE = "gateway"
# Bump when the container options below change, so running gateways are replaced.
# 2: the workers' socket volume; off the workers' network (there is none any more).
# 3: one token-check socket per replica (TOWER_AUTH_SOCKET, TOWER_AUTH_SLOTS).
GATEWAY_OPTIONS_VERSION = 3
PORT = 8080
SOCKET_MOUNT = "/run/parpaing"
HEALTH_TIMEOUT = 2.0
READY_TIMEOUT = 20.0

Say = sidecar.Say


class GatewayFailure(DockerFailure):
    """The gateway container could not be made to run; the message says why."""


@dataclass(frozen=True)
class GatewaySpec:
    name: str
    image: str
    environment: Mapping[str, str]
    socket_dir: str
    workers_socket_volume: str
    egress_net: str

    def digest(self) -> str:
        return sidecar.digest(self, GATEWAY_OPTIONS_VERSION)


def gateway_environment(settings: Settings) -> dict[str, str]:
    """What the gateway container's config is rendered from (gateway/render-config).
    Unset credentials are left out, so the gateway refuses that provider's calls (403)."""
    socket_name = gateway_auth_socket(settings).name
    env = {
        "ANTHROPIC_UPSTREAM": settings.anthropic_upstream,
        "OPENAI_UPSTREAM": settings.openai_upstream,
        "GEMINI_UPSTREAM": settings.gemini_upstream,
        # The replicas' sockets are slots beside this name (listener.py).
        "TOWER_AUTH_SOCKET": f"{SOCKET_MOUNT}/{socket_name}",
        "TOWER_AUTH_SLOTS": str(AUTH_SLOTS),
        "GATEWAY_AUTH_CACHE_SECONDS": str(int(settings.gateway_auth_cache_seconds)),
    }
    # The one list of credential variables (providers.py); each is a Settings field.
    secrets = {name: getattr(settings, name.lower()) for name in ALL_VARIABLES}
    env.update({name: value.get_secret_value() for name, value in secrets.items() if value})
    return env


def gateway_spec(settings: Settings, image_id: str) -> GatewaySpec:
    return GatewaySpec(
        name=gateway_container(settings),
        image=image_id,
        environment=gateway_environment(settings),
        socket_dir=str(gateway_auth_socket(settings).parent),
        workers_socket_volume=gateway_socket_volume(settings),
        egress_net=settings.gateway_egress_net,
    )


def container_options(spec: GatewaySpec) -> dict[str, Any]:
    """Keyword arguments for containers.create: nginx as www-data, nothing writable but
    /tmp and the workers' socket volume, no capabilities, and only the auth socket's
    directory from the host."""
    return {
        **sidecar.locked_down(spec, GATEWAY_ROLE, pids_limit=256),
        "environment": dict(spec.environment),
        "volumes": {
            spec.socket_dir: {"bind": SOCKET_MOUNT, "mode": "ro"},
            spec.workers_socket_volume: {"bind": GATEWAY_SOCKET_DIR, "mode": "rw"},
        },
        "network": spec.egress_net,
    }


# --- creating and updating ----------------------------------------------------------------


@dataclass(frozen=True)
class GatewayHost:
    """The gateway as the Docker runner's host sees it (tower/execution/docker_runner.Host)."""

    db: Pool
    settings: Settings
    # This replica's token-check socket (listener.SocketSlot.number); None: it has none.
    auth_slot: int | None = None

    async def setup(self, calls: DockerCalls) -> None:
        """Run the gateway (all-in-one; compose runs its own). Without it jobs still run,
        but their engines cannot reach a provider: that is reported (log, /health)."""
        if not self.settings.gateway_managed:
            return
        try:
            await ensure_gateway_once(self.db, calls, self.settings, self.auth_slot)
        except TowerError as problem:
            log.error("%s; agents cannot reach a provider until this is fixed", problem.message)

    def probe(self, client: docker.DockerClient) -> Probe:
        found = probe_gateway(self.settings, HEALTH_TIMEOUT, client)
        if not found.ok or not self.settings.gateway_managed:
            return found
        return probe_tower_check(self.settings, self.auth_slot, HEALTH_TIMEOUT, client)


async def ensure_gateway_once(
    db: Pool, calls: DockerCalls, settings: Settings, auth_slot: int | None
) -> str:
    """ensure_gateway, one replica at a time, checking it reaches this replica."""
    key = f"gateway:{gateway_container(settings)}"
    return await sidecar.one_at_a_time(db, calls, key, ensure_gateway, settings, auth_slot, True)


def ensure_gateway(
    client: docker.DockerClient,
    settings: Settings,
    auth_slot: int | None = None,
    check_tower: bool = False,
    say: Say = log.info,
) -> str:
    """The running gateway container's id, created or replaced as needed. With
    `check_tower` (a tower serving its token check calls this), also replaced when it runs
    but cannot reach that check on socket `auth_slot` (None: on any replica's)."""
    image = f"gateway image {settings.gateway_image}"
    with sidecar.failures_as(GatewayFailure, image, "gateway container"):
        image_id = str(client.images.get(settings.gateway_image).id)
        spec = gateway_spec(settings, image_id)
        ensure_egress_network(client, spec.egress_net)
        ensure_socket_volume(client, spec.workers_socket_volume)
        options = container_options(spec)
        wanted = sidecar.Sidecar("gateway container", spec, options, READY_TIMEOUT, GatewayFailure)
        container = sidecar.current(client, wanted, say)
        if container is not None and check_tower:
            container = _kept_if_it_reaches_tower(
                client, wanted, container, settings, auth_slot, say
            )
        if container is None:
            container = sidecar.create(client, wanted, say)
            _wait_ready(wanted, container, settings, say)
            if check_tower:
                _check_tower_reached(client, container, settings, auth_slot)
        return str(container.id)


def ensure_egress_network(client: docker.DockerClient, name: str) -> None:
    if any(n.get("Name") == name for n in client.api.networks(names=[name])):
        return
    try:
        client.api.create_network(
            name, driver="bridge", check_duplicate=True, labels={ROLE_LABEL: "gateway-egress"}
        )
    except APIError as exc:
        if exc.status_code != 409:
            raise


def _kept_if_it_reaches_tower(
    client: docker.DockerClient,
    wanted: sidecar.Sidecar,
    container: Container,
    settings: Settings,
    auth_slot: int | None,
    say: Say,
) -> Container | None:
    """The kept container, or None once removed because it cannot ask this replica: its
    mount of the socket directory outlived the directory (a deleted state dir)."""
    _wait_ready(wanted, container, settings, say)
    reached = probe_tower_check(settings, auth_slot, HEALTH_TIMEOUT, client)
    if reached.ok:
        return container
    say(
        f"replacing the gateway container {container.name}: it cannot reach this tower's "
        f"token check ({reached.detail})"
    )
    sidecar.remove(container)
    return None


def _check_tower_reached(
    client: docker.DockerClient, container: Container, settings: Settings, auth_slot: int | None
) -> None:
    reached = probe_tower_check(settings, auth_slot, HEALTH_TIMEOUT, client)
    if not reached.ok:
        raise GatewayFailure(
            f"gateway container {container.name} cannot reach this tower's token check: "
            f"{reached.detail}"
        )


def _wait_ready(
    wanted: sidecar.Sidecar, container: Container, settings: Settings, say: Say
) -> None:
    """Until the gateway answers /health; if it exits instead (render-config refused a
    setting), fail with its last words, which name the variable."""
    sidecar.wait_ready(wanted, container, lambda: probe_gateway(settings), say)


# --- health -------------------------------------------------------------------------------


def probe_gateway(
    settings: Settings, timeout: float = HEALTH_TIMEOUT, client: docker.DockerClient | None = None
) -> Probe:
    """Does the gateway answer /health? Blocking.

    Tower on the host cannot resolve GATEWAY_URL's name (Docker's DNS serves containers
    only), so a gateway container on this host is reached at its address on the egress
    network; without such a container (compose, or Docker unreachable from here),
    GATEWAY_URL is asked directly. With no `client`, one is opened for the look (the CLI)."""
    base, absent = _gateway_base(settings, timeout, client)
    if absent is not None:
        return absent
    return sidecar.ask(f"{base}/health", timeout)


def probe_tower_check(
    settings: Settings,
    auth_slot: int | None,
    timeout: float = HEALTH_TIMEOUT,
    client: docker.DockerClient | None = None,
) -> Probe:
    """Does the gateway reach tower's token check, end to end? Blocking. It is asked to
    check a random token (never a job's) with the replica on socket `auth_slot` (None:
    with whichever answers); any answer from tower, a "no" included, is a yes here."""
    base, absent = _gateway_base(settings, timeout, client)
    if absent is not None:
        return absent
    path = "/health/tower" if auth_slot is None else f"/health/tower/{auth_slot}"
    found = sidecar.ask(base + path, timeout, {"x-api-key": tokens.mint()})
    if found.ok:
        return Probe(True, "the gateway reaches tower's token check")
    return Probe(False, f"the gateway cannot reach tower's token check: {found.detail}")


def _gateway_base(
    settings: Settings, timeout: float, client: docker.DockerClient | None
) -> tuple[str, Probe | None]:
    """(the gateway's base URL from here, a failed Probe when its container is not up)."""
    try:
        name, net = gateway_container(settings), settings.gateway_egress_net
        state, address = sidecar.locate(client, name, net, max(1, int(timeout)))
    except (DockerException, requests.RequestException):
        state, address = "unknown", None
    if settings.gateway_managed and state in ("absent", "stopped"):
        return "", Probe(False, f"container {gateway_container(settings)} is {state}")
    return (f"http://{address}:{PORT}" if address else _base(settings)), None


def _base(settings: Settings) -> str:
    return settings.gateway_url.rstrip("/")
