"""Reachability checks against the Docker daemon, for /health and `parpaing doctor`.

The Docker runner pings with the client it holds (ping_client); `ping` and
`image_present` open a client of their own, for callers that hold none (the CLI, a
tower whose runner does not use Docker).

Blocking calls (the SDK is synchronous): callers run them in a thread with a deadline.
The daemon is found the way the Docker CLI finds it (DOCKER_HOST, else the local socket).
"""

from __future__ import annotations

import docker
from docker.errors import DockerException, ImageNotFound

from tower.errors import one_line
from tower.execution.runner import Probe as Probe


def ping_client(client: docker.DockerClient) -> Probe:
    """Does the daemon behind `client` answer? Blocking."""
    try:
        client.ping()
        return Probe(True, f"API {client.api.api_version}")
    except (DockerException, OSError) as exc:  # requests' errors are OSErrors
        return Probe(False, one_line(exc))


def ping(timeout: float) -> Probe:
    """Can we talk to the Docker daemon at all?"""
    try:
        client = docker.from_env(timeout=timeout)
    except DockerException as exc:
        return Probe(False, one_line(exc))
    try:
        return ping_client(client)
    finally:
        client.close()


def image_present(image: str, timeout: float) -> Probe:
    """Is `image` in the daemon's local image store?"""
    try:
        client = docker.from_env(timeout=timeout)
    except DockerException as exc:
        return Probe(False, one_line(exc))
    try:
        found = client.images.get(image)
        return Probe(True, str(found.short_id))
    except ImageNotFound:
        return Probe(False, f"image {image} not found")
    except (DockerException, OSError) as exc:
        return Probe(False, one_line(exc))
    finally:
        client.close()
