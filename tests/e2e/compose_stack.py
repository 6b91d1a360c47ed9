"""A docker-compose deployment of docker-compose.yml for a test: unique project, images
built once (BuildKit, with the CA secret), always torn down.

Debian's docker-compose 1.29 drives it (scripts/setup-docker installs it). The only image
docker-compose.yml would pull, PostgreSQL, is replaced through
tests/e2e/compose/docker-compose.test.yml by one built from the Debian base: there is no
registry on the machines the tests run on.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import pytest
from docker.errors import APIError, NotFound

from tower.db.embedded import free_port
from tower.images.build import (
    BuildRequest,
    build_worker_image,
    default_ca_bundle,
    deployment_requests,
    ensure_base_image,
)

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
TEST_DIR = Path(__file__).resolve().parent / "compose"
OVERRIDE_FILE = TEST_DIR / "docker-compose.test.yml"
POSTGRES_CONTEXT = TEST_DIR / "postgres"
WITH_CA = ROOT / "worker" / "build" / "with-ca"
COMPOSE_TIMEOUT = 240  # seconds for one docker-compose command: a hang fails, never blocks
COMPOSE_HINT = "docker-compose is required: run scripts/setup-docker (as root), then retry."
POOL_LABEL = "parpaing.pool"


def _checkout_tag() -> str:
    """Images of this checkout: parallel checkouts on one daemon do not overwrite each other."""
    return hashlib.sha256(str(ROOT).encode()).hexdigest()[:10]


@dataclass(frozen=True)
class StackImages:
    worker: str
    gateway: str
    egress: str
    tower: str
    lb: str
    postgres: str


def build_stack_images(worker_image: str, gateway_image: str, egress_image: str) -> StackImages:
    """Tower, load balancer and test PostgreSQL images (worker, gateway and egress proxy:
    built already)."""
    ca = default_ca_bundle()
    ensure_base_image()
    tag = _checkout_tag()
    with _env(TOWER_IMAGE=f"parpaing-tower:test-{tag}", LB_IMAGE=f"parpaing-lb:test-{tag}"):
        tower, lb = deployment_requests(ca)
    postgres = f"parpaing-test-postgres:15-{tag}"
    for request in (tower, lb):
        build_worker_image(request)
    with tempfile.TemporaryDirectory(prefix="parpaing-pg-context-") as tmp:
        context = Path(tmp) / "postgres"
        shutil.copytree(POSTGRES_CONTEXT, context)
        shutil.copy2(WITH_CA, context / "with-ca")
        build_worker_image(BuildRequest(postgres, ca, context, "test PostgreSQL image"))
    return StackImages(worker_image, gateway_image, egress_image, tower.image, lb.image, postgres)


@contextlib.contextmanager
def _env(**values: str) -> Any:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@dataclass
class ComposeStack:
    images: StackImages
    settings: dict[str, str]
    project: str = field(default_factory=lambda: f"parpaing-e2e-{uuid.uuid4().hex[:8]}")
    port: int = field(default_factory=free_port)
    api_key: str = field(default_factory=lambda: secrets.token_urlsafe(16))

    @property
    def worker_net(self) -> str:
        return f"{self.project}-workers"

    @property
    def socket_volume(self) -> str:
        return f"{self.project}-gateway-socket"

    @property
    def egress_socket_volume(self) -> str:
        return f"{self.project}-egress-socket"

    @property
    def egress_container(self) -> str:
        return f"{self.project}-egress"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        return {
            **os.environ,
            "POSTGRES_PASSWORD": secrets.token_hex(12),
            "PARPAING_PORT": str(self.port),
            "TOWER_API_KEY": self.api_key,
            "WORKER_NET": self.worker_net,
            "GATEWAY_CONTAINER": f"{self.project}-gateway",
            "GATEWAY_SOCKET_VOLUME": self.socket_volume,
            "EGRESS_CONTAINER": self.egress_container,
            "EGRESS_SOCKET_VOLUME": self.egress_socket_volume,
            "WORKER_IMAGE": self.images.worker,
            "GATEWAY_IMAGE": self.images.gateway,
            "EGRESS_IMAGE": self.images.egress,
            "TOWER_IMAGE": self.images.tower,
            "LB_IMAGE": self.images.lb,
            "POSTGRES_IMAGE": self.images.postgres,
            **self.settings,
        }

    def compose(self, *args: str, timeout: float = COMPOSE_TIMEOUT) -> str:
        command = [
            _compose_cli(),
            "--no-ansi",
            "-p",
            self.project,
            "-f",
            str(COMPOSE_FILE),
            "-f",
            str(OVERRIDE_FILE),
            *args,
        ]
        done = subprocess.run(
            command,
            env=self._env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def up(self, *args: str) -> None:
        self.compose("up", "-d", "--no-build", *args)

    def down(self) -> str:
        return self.compose("down", "--volumes", "--timeout", "90", timeout=COMPOSE_TIMEOUT + 90)

    def logs(self) -> str:
        try:
            return self.compose("logs", "--no-color", "--tail", "150", timeout=60)
        except (AssertionError, subprocess.TimeoutExpired) as exc:
            return f"(no logs: {exc})"

    def __post_init__(self) -> None:
        self._env = self.environment()


def _compose_cli() -> str:
    cli = shutil.which("docker-compose")
    if cli is None:
        pytest.fail(COMPOSE_HINT, pytrace=False)
    return cli


# --- what the stack leaves on the daemon -------------------------------------------------


def service_containers(
    client: docker.DockerClient, project: str, service: str, *, all: bool = False
) -> list[Any]:
    labels = [f"com.docker.compose.project={project}", f"com.docker.compose.service={service}"]
    found: list[Any] = client.containers.list(all=all, filters={"label": labels})
    return found


def leftovers(client: docker.DockerClient, stack: ComposeStack) -> dict[str, list[str]]:
    """Whatever of the deployment is still on the daemon: worker containers, their bundle
    volumes, a network of WORKER_NET's name (none since workers have no network), the
    project's own containers, networks and volumes (the gateway's and the egress proxy's
    socket volumes among them)."""
    scope = f"{POOL_LABEL}={stack.worker_net}"
    project = f"com.docker.compose.project={stack.project}"
    volumes = client.api.volumes(filters={"label": scope}).get("Volumes") or []
    project_volumes = client.api.volumes(filters={"label": project}).get("Volumes") or []
    for socket_volume in (stack.socket_volume, stack.egress_socket_volume):
        named = client.api.volumes(filters={"name": socket_volume}).get("Volumes") or []
        project_volumes += [v for v in named if v["Name"] == socket_volume]
    return {
        "workers": [c.name for c in client.containers.list(all=True, filters={"label": scope})],
        "bundle volumes": [v["Name"] for v in volumes],
        "networks": [
            n.name
            for n in client.networks.list()
            if n.name == stack.worker_net or n.name.startswith(f"{stack.project}_")
        ],
        "containers": [
            c.name for c in client.containers.list(all=True, filters={"label": project})
        ],
        "volumes": sorted({v["Name"] for v in project_volumes}),
    }


def force_remove(client: docker.DockerClient, stack: ComposeStack) -> None:
    """Last resort after a failed test: nothing of the stack stays on the shared daemon."""
    with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
        stack.compose("down", "--volumes", "--timeout", "5", timeout=120)
    left = leftovers(client, stack)
    for name in left["workers"] + left["containers"]:
        with contextlib.suppress(NotFound, APIError):
            client.containers.get(name).remove(force=True)
    for name in left["bundle volumes"] + left["volumes"]:
        with contextlib.suppress(NotFound, APIError):
            client.volumes.get(name).remove(force=True)
    for name in left["networks"]:
        with contextlib.suppress(NotFound, APIError):
            client.networks.get(name).remove()


def describe(record: dict[str, Any]) -> str:
    keys = ("job_id", "status", "attempt", "ran_by", "failure_reason", "error", "result")
    return json.dumps({key: record.get(key) for key in keys})
