"""A sidecar's life: a long-lived container tower keeps running beside its workers.

The gateway (tower/gateway/container.py) and the egress proxy (tower/egress/container.py)
are kept alike: one container of a given name whose label holds a digest of everything it
was created with. One that matches is kept (started if stopped), any other removed and
created again; a new one is waited for until its probe answers, or fails with its last
log lines (its entrypoint refusing a setting names the variable there). Replicas sharing a
Docker host do this one at a time. Each caller keeps its own spec, options and probe; this
module knows nothing of what runs inside.

Blocking calls (the SDK is synchronous), but for `one_at_a_time`, which runs them through
the runner's DockerCalls.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, Protocol

import docker
import requests
from docker.errors import DockerException, ImageNotFound, NotFound
from docker.models.containers import Container

from tower.db.pool import Pool
from tower.errors import one_line
from tower.execution.docker import queries
from tower.execution.docker.client import DockerCalls
from tower.execution.docker.containers import DockerFailure
from tower.execution.docker.hardening import HASH_LABEL, ROLE_LABEL
from tower.execution.docker.probe import Probe

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

# It stopped, or crashed and Docker restarts it: waiting longer will not make it answer.
GONE = ("exited", "dead", "restarting")
POLL = 0.1
LOG_TAIL_LINES = 5

Say = Callable[[str], None]
P = ParamSpec("P")


class Spec(Protocol):
    """What a caller wants its container made of (GatewaySpec, EgressSpec)."""

    @property
    def name(self) -> str: ...

    @property
    def image(self) -> str: ...

    @property
    def socket_dir(self) -> str: ...  # the host directory of tower's sockets it mounts

    def digest(self) -> str: ...  # of everything it is created with (HASH_LABEL)


@dataclass(frozen=True)
class Sidecar:
    """One sidecar container as its caller wants it now."""

    kind: str  # how messages name it: "gateway container", "egress proxy"
    spec: Spec
    options: Mapping[str, Any]  # containers.create's keyword arguments
    ready_timeout: float
    failure: type[DockerFailure]  # what its callers catch


def digest(spec: DataclassInstance, options_version: int) -> str:
    """A digest of a spec's fields (JSON values, mappings included) and of the version of
    its caller's options, for HASH_LABEL: a change in either replaces the container."""
    fields = {**dataclasses.asdict(spec), "options": options_version}
    text = json.dumps(fields, sort_keys=True, default=dict)
    return hashlib.sha256(text.encode()).hexdigest()


def locked_down(spec: Spec, role: str, pids_limit: int) -> dict[str, Any]:
    """containers.create's options every sidecar has: its image, name and labels (`role`,
    the digest); nothing writable but /tmp and its mounts, no capabilities, 512 MB, and
    Docker restarting it unless stopped. Callers add its environment, mounts, network."""
    return {
        "image": spec.image,
        "name": spec.name,
        "labels": {ROLE_LABEL: role, HASH_LABEL: spec.digest()},
        "read_only": True,
        "tmpfs": {"/tmp": "rw,nosuid,nodev,noexec,size=64m"},
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "pids_limit": pids_limit,
        "mem_limit": "512m",
        "init": True,
        "restart_policy": {"Name": "unless-stopped"},
        "detach": True,
    }


async def one_at_a_time(
    db: Pool,
    calls: DockerCalls,
    key: str,
    fn: Callable[Concatenate[docker.DockerClient, P], str],
    *args: P.args,
    **kwargs: P.kwargs,
) -> str:
    """fn(client, ...) through `calls`, by one replica at a time for `key` (an advisory lock
    in PostgreSQL: replicas share the Docker host, and each would create its own)."""
    async with db.acquire() as connection:
        await connection.execute(queries.NETWORK_LOCK, key)
        try:
            return await calls(fn, *args, **kwargs)
        finally:
            await connection.execute(queries.NETWORK_UNLOCK, key)


@contextlib.contextmanager
def failures_as(failure: type[DockerFailure], image: str, what: str) -> Iterator[None]:
    """Docker's errors within as `failure`: a missing `image` ("gateway image NAME") with
    how to build it, any other naming `what` failed ("gateway container")."""
    try:
        yield
    except ImageNotFound as exc:
        raise failure(
            f"{image} is not present; "
            "run `parpaing images build` (or restart `parpaing serve`, which builds it)"
        ) from exc
    except (DockerException, requests.RequestException) as exc:
        raise failure(f"{what}: {one_line(exc)}") from exc


def current(client: docker.DockerClient, sidecar: Sidecar, say: Say) -> Container | None:
    """The existing container when it was made as `sidecar` is now (started if stopped);
    otherwise it is removed."""
    spec = sidecar.spec
    try:
        container = client.containers.get(spec.name)
    except NotFound:
        return None
    if container.labels.get(HASH_LABEL) == spec.digest():
        if container.status != "running":
            say(f"starting the {sidecar.kind} {spec.name}")
            container.start()
        return container
    say(f"replacing the {sidecar.kind} {spec.name} (its image or configuration changed)")
    remove(container)
    return None


def remove(container: Container) -> None:
    with contextlib.suppress(NotFound):
        container.remove(force=True)


def create(client: docker.DockerClient, sidecar: Sidecar, say: Say) -> Container:
    """A new container, started; nothing is left of it when it cannot start."""
    spec = sidecar.spec
    say(f"starting the {sidecar.kind} {spec.name} ({spec.image[:19]})")
    Path(spec.socket_dir).mkdir(parents=True, exist_ok=True)
    container: Container = client.containers.create(**sidecar.options)
    try:
        container.start()
    except BaseException:
        with contextlib.suppress(DockerException):
            container.remove(force=True)
        raise
    return container


def wait_ready(
    sidecar: Sidecar, container: Container, ready: Callable[[], Probe], say: Say
) -> None:
    """Until `ready()` is ok; if the container stops instead, or ready_timeout passes, fail
    with its last log lines (or the probe's detail when it wrote none)."""
    end = time.monotonic() + sidecar.ready_timeout
    while True:
        result = ready()
        if result.ok:
            say(f"{sidecar.kind} {container.name} is ready")
            return
        container.reload()
        if container.status in GONE or time.monotonic() > end:
            tail = container.logs(tail=LOG_TAIL_LINES).decode(errors="replace").strip()
            raise sidecar.failure(
                f"{sidecar.kind} {container.name} is {container.status}, not answering: "
                f"{' | '.join(tail.splitlines()) or result.detail}"
            )
        time.sleep(POLL)


def locate(
    client: docker.DockerClient | None, name: str, network: str, timeout: int
) -> tuple[str, str | None]:
    """("absent" | "stopped" | "running", container `name`'s address on `network`). With
    no `client`, one is opened for the look (the CLI), `timeout` seconds a call."""
    if client is None:
        own = docker.from_env(timeout=timeout)
        try:
            return locate(own, name, network, timeout)
        finally:
            own.close()
    try:
        container = client.containers.get(name)
    except NotFound:
        return "absent", None
    if container.status != "running":
        return "stopped", None
    networks = container.attrs.get("NetworkSettings", {}).get("Networks") or {}
    return "running", str((networks.get(network) or {}).get("IPAddress") or "") or None


def ask(
    url: str,
    timeout: float,
    headers: Mapping[str, str] | None = None,
    meanings: Mapping[int, str] | None = None,
) -> Probe:
    """GET `url`: ok when it answers 200. `meanings`: the detail of a status that says more
    than its number (the egress proxy's 403: it answers, but not for this tower)."""
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return Probe(reply.status == 200, f"{url} answered {reply.status}")
    except urllib.error.HTTPError as exc:
        return Probe(False, (meanings or {}).get(exc.code, f"{url} answered {exc.code}"))
    except OSError as exc:  # URLError included
        return Probe(False, f"{url}: {one_line(exc)}")
