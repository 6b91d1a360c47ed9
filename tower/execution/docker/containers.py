"""The life of one worker container, as blocking Docker calls.

Everything here is synchronous (the Docker SDK is): async code calls these through
a thread (tower/execution/docker/client.py). Each function does one Docker thing and
turns the SDK's failures into TowerErrors that say what went wrong.
"""

from __future__ import annotations

import contextlib
import functools
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import docker
import requests
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.models.containers import _create_container_args
from docker.utils.socket import STDERR, frames_iter

from tower.errors import Unavailable, one_line
from tower.execution import protocol
from tower.execution.bundle import StreamedBundle
from tower.execution.docker.hardening import (
    ROLE_LABEL,
    SLOT_LABEL,
    WORKER_ROLE,
    WORKER_UID,
    bundle_volume_name,
    container_options,
    worker_labels,
)
from tower.execution.docker.worker_stdout import Handover, WorkerStdout
from tower.execution.slots import ContainerShape
from tower.settings import Settings

READY_TIMEOUT = 30.0
# Writing a bundle into a reading worker takes milliseconds, even for tens of MB.
DELIVER_TIMEOUT = 30.0
LOG_TAIL_CHARS = 2000


class DockerFailure(Unavailable):
    """A Docker call failed; the message names the step and the daemon's reason."""


class WorkerImageMissing(DockerFailure):
    """The worker image is not in the daemon's store (build it with `parpaing images build`)."""


class WorkerStartFailed(DockerFailure):
    """A worker container could not be made ready; nothing of it is left behind."""


@dataclass(frozen=True)
class ExitInfo:
    status_code: int
    oom_killed: bool


# Receives the worker's output as it comes: ("stdout" | "stderr", bytes), on a Docker thread.
Emit = Callable[[str, bytes], None]


@dataclass(frozen=True)
class WorkerInfo:
    container_id: str
    slot_id: str
    status: str


# --- creation --------------------------------------------------------------------------


def create_worker(
    client: docker.DockerClient,
    shape: ContainerShape,
    settings: Settings,
    slot_id: str,
    labels: Mapping[str, str] | None = None,
    ready_timeout: float = READY_TIMEOUT,
    timed: Timed | None = None,
) -> str:
    """Create and start a hardened worker with its bundle volume; return its container id
    once the worker announced it is ready. On any failure, remove what was made.
    `timed` hears how long each step took: create, start, ready."""
    container_id: str | None = None
    clock = _Clock(timed)
    try:
        volume = _create_bundle_volume(client, shape, settings, slot_id, labels)
        options = container_options(shape, settings, slot_id, volume, labels)
        container_id = _create_container(client, options)
        clock.lap("create")
        client.api.start(container_id)
        clock.lap("start")
        wait_ready(client, container_id, ready_timeout)
        clock.lap("ready")
        return container_id
    except ImageNotFound as exc:
        remove_worker(client, container_id, slot_id)
        raise WorkerImageMissing(
            f"worker image {shape.image} is not present; run `parpaing images build` ({exc})"
        ) from exc
    except (DockerException, requests.RequestException, WorkerStartFailed) as exc:
        remove_worker(client, container_id, slot_id)
        if isinstance(exc, WorkerStartFailed):
            raise
        raise WorkerStartFailed(f"worker {slot_id}: {one_line(exc, 500)}") from exc


def _create_container(client: docker.DockerClient, options: dict[str, Any]) -> str:
    """The new container's id. The SDK's `containers.create` inspects what it made, a
    second call to a busy daemon on every cold job's path, for an object we never use."""
    arguments = dict(options, version=client.api._version)
    created = client.api.create_container(**_create_container_args(arguments))
    return str(created["Id"])


# Told the seconds one step of a worker's creation took, by step name.
Timed = Callable[[str, float], None]


class _Clock:
    """Laps of a creation, each told to `timed` (if any) as it ends."""

    def __init__(self, timed: Timed | None) -> None:
        self._timed = timed
        self._last = time.monotonic()

    def lap(self, step: str) -> None:
        now = time.monotonic()
        if self._timed is not None:
            self._timed(step, now - self._last)
        self._last = now


def _create_bundle_volume(
    client: docker.DockerClient,
    shape: ContainerShape,
    settings: Settings,
    slot_id: str,
    labels: Mapping[str, str] | None,
) -> str:
    # The worker unpacks the bundle and writes /bundle/out here; collect's fallback
    # (get_archive) copies from it. tmpfs-backed, so a bundle never touches the host's
    # disk and is size-bounded.
    name = bundle_volume_name(slot_id)
    size = (
        f"size={settings.bundle_volume_size},uid={WORKER_UID},gid={WORKER_UID},nosuid,nodev,noexec"
    )
    client.volumes.create(
        name=name,
        driver="local",
        driver_opts={"type": "tmpfs", "device": "tmpfs", "o": size},
        labels=worker_labels(shape, slot_id, labels),
    )
    return name


def wait_ready(client: docker.DockerClient, container_id: str, timeout: float) -> None:
    """Block until the worker prints its ready line; fail if it exits or takes too long."""
    stream = client.api.logs(container_id, stdout=True, stderr=True, stream=True, follow=True)
    # The stream blocks without a timeout; closing it from a timer ends the wait.
    deadline = threading.Timer(timeout, stream.close)
    deadline.daemon = True
    deadline.start()
    seen = b""
    try:
        for chunk in stream:
            seen = (seen + chunk)[-LOG_TAIL_CHARS:]
            if protocol.READY_LINE in seen:
                return
    finally:
        deadline.cancel()
        stream.close()
    _raise_not_ready(client, container_id, timeout, seen)


def _raise_not_ready(
    client: docker.DockerClient, container_id: str, timeout: float, seen: bytes
) -> None:
    state = client.api.inspect_container(container_id)["State"]
    logs = seen.decode(errors="replace").strip() or "(no output)"
    if state.get("Running"):
        raise WorkerStartFailed(f"worker not ready within {timeout:g} s; its output: {logs}")
    raise WorkerStartFailed(
        f"worker exited with code {state.get('ExitCode')} before it was ready"
        f"{' (out of memory)' if state.get('OOMKilled') else ''}; its output: {logs}"
    )


# --- one job ---------------------------------------------------------------------------


def deliver(
    _client: docker.DockerClient,
    feed: Any,
    tar: bytes | StreamedBundle,
    timeout: float = DELIVER_TIMEOUT,
) -> None:
    """Write the framed job bundle on the worker's stdin, through the socket `attach`
    returned: a few milliseconds, where put_archive cost Docker a helper process. The
    worker reads exactly the framed size, so it never acts on half a bundle. A streamed
    bundle (a job with inputs) goes a piece at a time, read from its files as it goes."""
    raw = getattr(feed, "_sock", feed)  # socket.SocketIO has no sendall; its socket has
    # A worker that is not reading (it died idle; its shell keeps the container up)
    # would block the write once the pipes are full, before the job's timeout runs.
    # The timeout bounds each write: a piece of a streamed bundle is at most 1 MiB.
    raw.settimeout(timeout)
    try:
        if isinstance(tar, bytes):
            raw.sendall(protocol.bundle_header(len(tar)))
            raw.sendall(tar)
        else:
            raw.sendall(protocol.bundle_header(tar.size))
            for piece in tar.pieces():
                raw.sendall(piece)
    except OSError as exc:
        raise DockerFailure(f"delivering the job to its worker: {one_line(exc, 500)}") from exc
    finally:
        with contextlib.suppress(OSError):
            raw.settimeout(None)  # following the output waits as long as the job runs


def attach(client: docker.DockerClient, container_id: str) -> Any:
    """One socket to the container's stdin and from its stdout and stderr, from now on
    and without their backlog (so not the ready line): attach before delivering, and no
    output of the job is missed. Unlike the logs API, attach keeps the two streams apart
    and does not wait on the log driver. Returns the socket, for deliver and
    follow_output."""
    params = {"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1, "logs": 0}
    try:
        return client.api.attach_socket(container_id, params=params)
    except (DockerException, requests.RequestException) as exc:
        raise DockerFailure(f"attaching to the worker: {one_line(exc, 500)}") from exc


@dataclass(frozen=True)
class Followed:
    """How following a worker's output ended: `finished` is False when the deadline
    passed first; `output` is the tar of /bundle/out the worker sent, if it sent one;
    its artifacts went to the Handover."""

    finished: bool
    output: bytes | None


def follow_output(
    _client: docker.DockerClient,
    feed: Any,
    timeout: float,
    emit: Emit,
    max_frame: int,
    artifact_cap: int = 0,
    handover: Handover | None = None,
) -> Followed:
    """Pass the worker's output to `emit` until the worker announces it is done (its
    frames are not output, see worker_stdout) or the container exits, for at most
    `timeout` seconds. Closes the feed. Artifacts are kept only from a worker that
    finished in time."""
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        close_output(feed)

    deadline = threading.Timer(timeout, expire)
    deadline.daemon = True
    deadline.start()
    stdout = WorkerStdout(emit, max_frame, artifact_cap)
    try:
        for stream, data in frames_iter(feed, tty=False):
            if stream == STDERR:
                emit("stderr", data)
            elif stdout.feed(data):
                break
        else:
            stdout.flush()
    except (OSError, ValueError):
        stdout.flush()  # the feed was closed under us: the deadline passed
    finally:
        deadline.cancel()
        close_output(feed)
        finished = not expired.is_set()
        if finished and handover is not None:
            handover.give(stdout.take_artifacts())
        stdout.discard()
    return Followed(finished, stdout.output)


def close_output(feed: Any) -> None:
    """Close an attached feed; wakes a thread blocked reading it (shutdown does, close
    alone does not). Safe to call twice."""
    raw = getattr(feed, "_sock", feed)
    if raw is None:
        return  # a socket.SocketIO already closed
    with contextlib.suppress(OSError):
        raw.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        feed.close()
        raw.close()


def exit_info_since(client: docker.DockerClient, container_id: str, since: float) -> ExitInfo:
    """Exit code (-1 while running) and whether the OOM killer struck since `since`
    (epoch seconds): OOMKilled is set even while running when the engine was killed."""
    info = running_exit_info(client, container_id)
    if info.oom_killed:
        return info
    return ExitInfo(info.status_code, oom_killed_since(client, container_id, since))


def running_exit_info(client: docker.DockerClient, container_id: str) -> ExitInfo:
    """Exit code (-1 while still running) and whether the OOM killer struck."""
    state = client.api.inspect_container(container_id)["State"]
    code = -1 if state.get("Running") else int(state.get("ExitCode", -1))
    return ExitInfo(code, bool(state.get("OOMKilled")))


def oom_killed_since(client: docker.DockerClient, container_id: str, since: float) -> bool:
    """Did the OOM killer strike in the container since `since` (epoch seconds)?

    State.OOMKilled is only set when the container itself ends; when the killer picks
    the engine, the container lives on, and only Docker's "oom" event tells."""
    events = client.api.events(
        since=int(since) - 1,
        until=f"{time.time():.9f}",
        filters={"container": container_id, "event": "oom"},
        decode=True,
    )
    try:
        return any(True for _ in events)
    finally:
        events.close()


def kill(client: docker.DockerClient, container_id: str) -> None:
    """SIGKILL the container; one already stopped or gone is fine."""
    try:
        client.api.kill(container_id)
    except NotFound:
        return
    except APIError as exc:
        if exc.status_code == 409:  # not running
            return
        raise DockerFailure(f"killing worker {container_id[:12]}: {one_line(exc, 500)}") from exc


def remove_worker(client: docker.DockerClient, container_id: str | None, slot_id: str) -> None:
    """Force-remove the slot's container (by id, else by its slot label) and its volume."""
    ids = [container_id] if container_id else _containers_of_slot(client, slot_id)
    for found in ids:
        _ignore_missing(functools.partial(client.api.remove_container, found, force=True))
    _ignore_missing(lambda: client.api.remove_volume(bundle_volume_name(slot_id), force=True))


def _containers_of_slot(client: docker.DockerClient, slot_id: str) -> list[str]:
    filters = {"label": [f"{ROLE_LABEL}={WORKER_ROLE}", f"{SLOT_LABEL}={slot_id}"]}
    return [str(c["Id"]) for c in client.api.containers(all=True, filters=filters)]


def _ignore_missing(call: Callable[[], object]) -> None:
    try:
        call()
    except NotFound:
        return
    except APIError as exc:
        # 409 "removal already in progress": someone else is removing it; fine.
        if exc.status_code != 409:
            raise DockerFailure(f"removing a worker: {one_line(exc, 500)}") from exc


# --- inventory -------------------------------------------------------------------------


def docker_host_id(client: docker.DockerClient) -> str:
    """The daemon's own ID: which Docker host a pool row belongs to."""
    return str(client.info()["ID"])


def image_id(client: docker.DockerClient, image: str) -> str:
    """The ID the daemon resolves `image` to; it changes when the image is rebuilt."""
    try:
        # The low-level call: the SDK's Image model would be built only to read its ID.
        return str(client.api.inspect_image(image)["Id"])
    except ImageNotFound as exc:
        raise WorkerImageMissing(
            f"worker image {image} is not present; run `parpaing images build`"
        ) from exc
    except (DockerException, requests.RequestException) as exc:
        raise DockerFailure(f"resolving image {image}: {one_line(exc, 500)}") from exc
