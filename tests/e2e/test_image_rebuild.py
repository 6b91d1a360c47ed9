"""Rebuilding an image replaces the old one instead of piling up untagged gigabytes,
but never pulls it from under a container that still uses it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from docker.errors import ImageNotFound

from tower.images.build import (
    BASE_IMAGE,
    BuildRequest,
    build_worker_image,
    context_digest,
    image_is_current,
    image_is_outdated,
)

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


def test_an_image_built_from_another_context_is_outdated_and_an_unlabelled_one_is_not(
    small_context: Path, docker_client: docker.DockerClient
) -> None:
    # `parpaing serve` rebuilds an outdated worker image: it may not speak this protocol.
    assert not image_is_outdated(TAG, small_context)  # missing: built as missing, not this
    build(docker_client, small_context, "one")
    assert image_is_current(TAG, small_context)
    assert not image_is_outdated(TAG, small_context)
    (small_context / "marker").write_text("two")
    assert image_is_outdated(TAG, small_context)
    assert not image_is_outdated(BASE_IMAGE, small_context)  # no label: someone else's
    # No sources here to compare with (compose's tower image): taken as it is.
    assert not image_is_outdated(TAG, small_context / "no-such-context")


def test_bytecode_caches_do_not_change_a_context(tmp_path: Path) -> None:
    (tmp_path / "worker.py").write_text("print('hi')\n")
    before = context_digest(tmp_path)
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "worker.cpython-311.pyc").write_bytes(b"\0bytecode")
    (tmp_path / "stray.pyc").write_bytes(b"\0")
    assert context_digest(tmp_path) == before
    (tmp_path / "worker.py").write_text("print('changed')\n")
    assert context_digest(tmp_path) != before
