"""Following a worker again, from its container's log: after its tower died (another
replica adopted the job) or after the Docker daemon restarted under a live attach.

Docker keeps a worker's output in its log (the `local` driver), so the logs API with
`follow` replays it from the container's start and then goes on live, without the gap
an attach leaves between the two. Replaying it through a new WorkerStdout finds the same
frames and the same output; the output already passed on (stored in the job's log, or
emitted before the stream broke) is skipped, byte for byte per stream, so nothing is
stored twice. The log starts with the ready line, which the first attach never saw:
it is dropped. A log that no longer starts there (rotated past its 2 MB, see
hardening.LOG_CONFIG) cannot be lined up with what was stored: its output is not passed
on, but its frames (the result, the artifacts) still count.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import docker
import requests
from docker.errors import DockerException, NotFound

from tower.errors import one_line
from tower.execution.docker.containers import DockerFailure, Emit, close_output
from tower.execution.docker.worker_stdout import Handover, WorkerStdout
from tower.execution.protocol import READY_LINE

HEADER = struct.Struct(">BxxxL")  # Docker's multiplexed stream: stream id, size
STDERR_ID = 2
READY = READY_LINE + b"\n"


@dataclass(frozen=True)
class Replayed:
    """How following the log ended: `finished` is False when the deadline passed first;
    `done` whether the done line came (else the stream ended: the container stopped, or
    the daemon went away); `output` the worker's output frame, if it sent one."""

    finished: bool
    done: bool
    output: bytes | None


class Skipping:
    """An Emit that drops the log's leading ready line, then the first `skip[stream]`
    bytes of each stream (already passed on), and passes the rest to `emit`. Counts
    what it passes, so a later replay can skip that too."""

    def __init__(self, emit: Emit, skip: dict[str, int]) -> None:
        self._emit = emit
        self._skip = dict(skip)
        self._ready = b""
        self._aligned: bool | None = None  # None until the ready line was checked

    def __call__(self, stream: str, data: bytes) -> None:
        if self._aligned is None:
            data = self._past_ready(stream, data)
        if not self._aligned or not data:
            return
        left = self._skip.get(stream, 0)
        if left:
            self._skip[stream] = max(left - len(data), 0)
            data = data[left:]
        if data:
            self._emit(stream, data)

    def _past_ready(self, stream: str, data: bytes) -> bytes:
        if stream != "stdout":
            self._aligned = False
            return b""
        wanted = len(READY) - len(self._ready)
        self._ready += data[:wanted]
        if not READY.startswith(self._ready):
            self._aligned = False
        elif self._ready == READY:
            self._aligned = True
        return data[wanted:]


class Counting:
    """An Emit that counts, per stream, the bytes it passed on to `emit`."""

    def __init__(self, emit: Emit) -> None:
        self._emit = emit
        self.passed: dict[str, int] = {}

    def __call__(self, stream: str, data: bytes) -> None:
        self.passed[stream] = self.passed.get(stream, 0) + len(data)
        self._emit(stream, data)


def container_running(client: docker.DockerClient, container_id: str) -> bool:
    """Whether the container is up; False when it is gone. Raises DockerFailure when
    the daemon does not answer (the caller may wait for it)."""
    try:
        state = client.api.inspect_container(container_id)["State"]
    except NotFound:
        return False
    except (DockerException, requests.RequestException) as exc:
        raise DockerFailure(f"inspecting worker {container_id[:12]}: {one_line(exc, 500)}") from exc
    return bool(state.get("Running"))


def follow_log(
    client: docker.DockerClient,
    container_id: str,
    timeout: float,
    emit: Emit,
    max_frame: int,
    artifact_cap: int = 0,
    handover: Handover | None = None,
) -> Replayed:
    """Replay the container's log from its start and follow it, as
    containers.follow_output follows an attach: output to `emit` (wrap it in Skipping),
    frames kept, at most `timeout` seconds. Artifacts go to `handover` only when the done
    line came in time."""
    response = _open_log(client, container_id)
    sock = client.api._get_raw_response_socket(response)
    client.api._disable_socket_timeout(sock)  # a job may print nothing for minutes
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        close_output(sock)

    deadline = threading.Timer(timeout, expire)
    deadline.daemon = True
    deadline.start()
    stdout = WorkerStdout(emit, max_frame, artifact_cap)
    done = False
    try:
        for stream, data in _frames(response):
            if stream == STDERR_ID:
                emit("stderr", data)
            elif stdout.feed(data):
                done = True
                break
        else:
            stdout.flush()
    except (OSError, ValueError, requests.RequestException):
        stdout.flush()  # closed under us (the deadline), or the daemon went away
    finally:
        deadline.cancel()
        close_output(sock)  # the response's own socket: nothing more to close
        finished = not expired.is_set()
        if finished and done and handover is not None:
            handover.give(stdout.take_artifacts())
        stdout.discard()
    return Replayed(finished, done, stdout.output if done else None)


def _open_log(client: docker.DockerClient, container_id: str) -> Any:
    params = {"stdout": 1, "stderr": 1, "follow": 1, "tail": "all", "timestamps": 0}
    try:
        url = client.api._url("/containers/{0}/logs", container_id)
        response = client.api._get(url, params=params, stream=True)
        client.api._raise_for_status(response)
    except (DockerException, requests.RequestException) as exc:
        raise DockerFailure(f"reading the worker's log: {one_line(exc, 500)}") from exc
    return response


def _frames(response: Any) -> Iterator[tuple[int, bytes]]:
    """(stream id, data) from the logs API's multiplexed body, until it ends."""
    raw = response.raw
    while True:
        header = _read(raw, HEADER.size)
        if len(header) < HEADER.size:
            return
        stream, size = HEADER.unpack(header)
        data = _read(raw, size)
        if len(data) < size:
            return
        if data:
            yield stream, data


def _read(raw: Any, size: int) -> bytes:
    """Exactly `size` bytes, or fewer at the end of the stream."""
    got = b""
    while len(got) < size:
        piece = raw.read(size - len(got))
        if not piece:
            break
        got += piece
    return got
