"""Looks at worker containers from outside, for the e2e tests: tower itself never waits
for a container's exit (it follows the worker's done line) nor lists workers (the pool's
reconcile has its own inventory)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

import docker
import requests

from tower.errors import one_line
from tower.execution import protocol
from tower.execution.docker.containers import (
    ROLE_LABEL,
    SLOT_LABEL,
    WORKER_ROLE,
    DockerFailure,
    ExitInfo,
    WorkerInfo,
    exit_info_since,
)


def wait_exit(client: docker.DockerClient, container_id: str, timeout: float) -> ExitInfo | None:
    """How the container ended, or None if it still runs after `timeout` seconds."""
    try:
        client.api.wait(container_id, timeout=max(timeout, 0.001))
    except requests.exceptions.ConnectionError as exc:
        # requests reports a read timeout on a Unix socket as a ConnectionError.
        if is_timeout(exc):
            return None
        raise DockerFailure(f"waiting for the worker: {one_line(exc, 500)}") from exc
    except requests.exceptions.Timeout:
        return None
    return exit_info(client, container_id)


def wait_finished(
    client: docker.DockerClient, container_id: str, timeout: float
) -> ExitInfo | None:
    """Block until the worker announces it is done, or the container exits; None after
    `timeout` seconds. Returns how it stands then (see exit_info_since)."""
    started = time.time()
    if not wait_done(client, container_id, timeout):
        return None
    return exit_info_since(client, container_id, started)


def list_workers(client: docker.DockerClient) -> list[WorkerInfo]:
    """Every worker container on this daemon, running or not, by its role label."""
    filters = {"label": f"{ROLE_LABEL}={WORKER_ROLE}"}
    return [
        WorkerInfo(str(c["Id"]), c.get("Labels", {}).get(SLOT_LABEL, ""), str(c["State"]))
        for c in client.api.containers(all=True, filters=filters)
    ]


def list_bundle_volumes(client: docker.DockerClient) -> dict[str, str]:
    """Bundle volumes by name → slot id, so orphans (container gone) can be removed."""
    filters = {"label": f"{ROLE_LABEL}={WORKER_ROLE}"}
    volumes = client.api.volumes(filters=filters).get("Volumes") or []
    return {v["Name"]: (v.get("Labels") or {}).get(SLOT_LABEL, "") for v in volumes}


def wait_done(client: docker.DockerClient, container_id: str, timeout: float) -> bool:
    """Block until the worker announces it is done, or the container exits; False when
    `timeout` seconds pass first.

    The worker must stay alive after writing its result: the bundle volume is a tmpfs
    that Docker unmounts when the container stops, and /bundle/out goes with it."""
    stream = client.api.logs(container_id, stdout=True, stderr=False, stream=True, follow=True)
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        stream.close()

    deadline = threading.Timer(timeout, expire)
    deadline.daemon = True
    deadline.start()
    try:
        read_until(stream, protocol.DONE_LINE)
    finally:
        deadline.cancel()
        stream.close()
    return not expired.is_set()


def is_timeout(exc: BaseException) -> bool:
    return "timed out" in str(exc).lower() or "timeout" in type(exc).__name__.lower()


def exit_info(client: docker.DockerClient, container_id: str) -> ExitInfo:
    state = client.api.inspect_container(container_id)["State"]
    return ExitInfo(int(state.get("ExitCode", -1)), bool(state.get("OOMKilled")))


def read_until(stream: Iterable[bytes], line: bytes) -> bool:
    """Consume `stream` until `line` appears (True) or the stream ends (False)."""
    window = b""
    for chunk in stream:
        window = window[-len(line) :] + chunk
        if line in window:
            return True
    return False
