"""End-to-end fixtures: a real Docker daemon and the real worker image, built once per run.

These tests never skip: a machine without Docker fails them loudly, with the fix.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import docker
import pytest
from docker.errors import DockerException

from tests.support.second_docker import SecondDocker, second_docker
from tower.images.build import (
    EGRESS_CONTEXT,
    GATEWAY_CONTEXT,
    build_images,
    default_ca_bundle,
    image_is_current,
)
from tower.settings import Settings

# A branch that changes worker/ can test its own image beside others' on a shared daemon.
WORKER_IMAGE = os.environ.get("PARPAING_TEST_WORKER_IMAGE", "parpaing-worker:latest")
# Likewise for gateway/: PARPAING_TEST_GATEWAY_IMAGE.
GATEWAY_IMAGE = os.environ.get("PARPAING_TEST_GATEWAY_IMAGE", "parpaing-gateway:latest")
# And for egress/: PARPAING_TEST_EGRESS_IMAGE.
EGRESS_IMAGE = os.environ.get("PARPAING_TEST_EGRESS_IMAGE", "parpaing-egress:latest")
SETUP_HINT = "Docker is required for tests/e2e: run scripts/setup-docker (as root), then retry."


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    try:
        client = docker.from_env()
        client.ping()
    except DockerException as exc:
        pytest.fail(f"{SETUP_HINT}\nThe Docker daemon did not answer: {exc}", pytrace=False)
    yield client
    client.close()


@pytest.fixture(scope="session")
def worker_image(docker_client: docker.DockerClient) -> str:
    """Build (or refresh from the layer cache) the base and worker images once per session."""
    settings = Settings(worker_image=WORKER_IMAGE)
    return build_images(settings, ca_bundle=default_ca_bundle(), which=("worker",))


@pytest.fixture(scope="session")
def gateway_image(docker_client: docker.DockerClient) -> str:
    """The gateway image, built unless an image of the current gateway/ sources exists."""
    if not image_is_current(GATEWAY_IMAGE, GATEWAY_CONTEXT):
        settings = Settings(gateway_image=GATEWAY_IMAGE)
        build_images(settings, ca_bundle=default_ca_bundle(), which=("gateway",))
    return GATEWAY_IMAGE


@pytest.fixture(scope="session")
def egress_image(docker_client: docker.DockerClient) -> str:
    """The egress proxy's image, built unless an image of the current egress/ sources exists."""
    if not image_is_current(EGRESS_IMAGE, EGRESS_CONTEXT):
        settings = Settings(egress_image=EGRESS_IMAGE)
        build_images(settings, ca_bundle=default_ca_bundle(), which=("egress",))
    return EGRESS_IMAGE


@pytest.fixture(scope="module")
def engine(docker_client: docker.DockerClient, worker_image: str) -> Iterator[SecondDocker]:
    """A second Docker engine of the module's own, with the worker image: the one a test
    may stop, restart or call another host (tests/support/second_docker.py)."""
    with second_docker() as second:
        second.copy_image(docker_client, worker_image)
        yield second
