"""Rebuilding an image replaces the old one instead of piling up untagged gigabytes,
but never pulls it from under a container that still uses it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from docker.errors import ImageNotFound

from tower.images.build import BASE_IMAGE, BuildRequest, build_worker_image

TAG = "parpaing-e2e-rebuild:test"


@pytest.fixture
def small_context(
    tmp_path: Path, docker_client: docker.DockerClient, worker_image: str
) -> Iterator[Path]:
    # worker_image: the session build has made sure the base image exists.
    (tmp_path / "Dockerfile").write_text(f"FROM {BASE_IMAGE}\nCOPY marker /marker\n")
    yield tmp_path
    with contextlib.suppress(ImageNotFound):
        docker_client.images.remove(TAG, force=True)


def build(client: docker.DockerClient, context: Path, marker: str) -> str:
    (context / "marker").write_text(marker)
    build_worker_image(BuildRequest(TAG, context=context), log=lambda _line: None)
    return str(client.images.get(TAG).id)


def image_exists(client: docker.DockerClient, image_id: str) -> bool:
    try:
        client.images.get(image_id)
    except ImageNotFound:
        return False
    return True


def test_rebuild_removes_the_image_it_replaced(
    docker_client: docker.DockerClient, small_context: Path
) -> None:
    first = build(docker_client, small_context, "one")
    second = build(docker_client, small_context, "two")
    assert second != first
    assert not image_exists(docker_client, first)


def test_rebuild_keeps_the_replaced_image_while_a_container_uses_it(
    docker_client: docker.DockerClient, small_context: Path
) -> None:
    first = build(docker_client, small_context, "one")
    container = docker_client.containers.create(first, ["true"])
    try:
        build(docker_client, small_context, "two")
        assert image_exists(docker_client, first)
    finally:
        container.remove(force=True)
    docker_client.images.remove(first)
