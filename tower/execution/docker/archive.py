"""Copying out of a worker (get_archive) without trusting sizes: /bundle/out, and the
artifacts tar the worker left in its volume (protocol.ARTIFACTS_FILE).

/bundle/out is the fallback when no output frame arrived (a worker killed mid-job, a
timeout). What the job left there is the job's: a tmpfs bounds the bytes written, not
the size a file declares, and a sparse file of 50 GB fits in a 1 MB tmpfs yet streams
as 50 GB. So the copy streams, its tar headers are read as they arrive, and it stops
(closing the response, so the daemon stops too) as soon as a member's declared size or
the bytes received pass the cap: never more than the cap is held, and nothing is joined
first. The artifacts tar is read the same way, never past the size the worker announced.
"""

from __future__ import annotations

import contextlib
import io
import tarfile
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, cast
from urllib.parse import quote

import docker
import requests
from docker.errors import DockerException

from tower.errors import TowerError, one_line
from tower.execution import bundle, protocol
from tower.execution.bundle import WorkerOutput
from tower.execution.docker.containers import DockerFailure
from tower.execution.docker.worker_stdout import Handover, Spool

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

COPY_CHUNK = 64 * 1024
ERROR_BODY_LIMIT = 1000


class OutputTooLarge(TowerError):
    """The copy of /bundle/out passed the cap; the message says what passed it."""


def collect_output(client: docker.DockerClient, container_id: str, cap: int) -> WorkerOutput | None:
    """What the worker left in /bundle/out, or None when it left nothing there. An
    archive over `cap` bytes is stopped and reads as too large (bundle.too_large_output)."""
    response = _request_archive(client, container_id, protocol.OUTPUT_DIR)
    if response is None:
        return None
    with contextlib.closing(response):
        try:
            return bundle.output_of(read_capped(response.iter_content(COPY_CHUNK), cap))
        except OutputTooLarge as refused:
            return bundle.too_large_output(refused.message)
        except (DockerException, requests.RequestException, OSError) as exc:
            raise DockerFailure(f"collecting the worker's output: {one_line(exc, 500)}") from exc


def copy_artifacts(
    client: docker.DockerClient, container_id: str, size: int, handover: Handover
) -> None:
    """The artifacts tar the worker announced (`size` bytes in protocol.ARTIFACTS_FILE),
    spooled to a private file handed to `handover`; None handed over when the volume
    holds no such file of that size (the artifacts are then lost, never the outcome).
    Never more than the announced size is read."""
    response = _request_archive(client, container_id, protocol.ARTIFACTS_FILE)
    if response is None:
        handover.give(None)
        return
    spool = Spool()
    try:
        with contextlib.closing(response):
            whole = _spool_member(response.iter_content(COPY_CHUNK), size, spool)
    except (DockerException, requests.RequestException, OSError) as exc:
        spool.discard()
        raise DockerFailure(f"copying the worker's artifacts: {one_line(exc, 500)}") from exc
    if whole:
        handover.give(spool.close())
    else:
        spool.discard()
        handover.give(None)


# Past the tar's own bytes, what the daemon's archive of one file may add: its header
# (an extended one for a long name), padding, the end blocks.
ARCHIVE_OVERHEAD = 64 * 1024


def _spool_member(chunks: Iterable[bytes], size: int, spool: Spool) -> bool:
    """Whether the archive's first member was a regular file of `size` bytes, copied."""
    stream = CappedStream(iter(chunks), size + ARCHIVE_OVERHEAD, protocol.ARTIFACTS_FILE)
    try:
        with tarfile.open(fileobj=stream, mode="r|", bufsize=COPY_CHUNK) as tar:
            member = tar.next()
            if member is None or not member.isreg() or member.size != size:
                return False
            extracted = tar.extractfile(member)
            assert extracted is not None  # a regular file always has content, if empty
            while piece := extracted.read(COPY_CHUNK):
                spool.write(piece)
    except (tarfile.TarError, OutputTooLarge):
        return False
    return True


def _request_archive(
    client: docker.DockerClient, container_id: str, path: str
) -> requests.Response | None:
    """The streamed answer to GET /containers/<id>/archive?path=<path> (the SDK's
    get_archive hides its response, which must be closed to stop a copy midway)."""
    api = client.api
    url = f"{api.base_url}/v{api.api_version}/containers/{quote(container_id, safe='')}/archive"
    try:
        response = api.get(
            url,
            params={"path": path},
            headers={"Accept-Encoding": "identity"},
            stream=True,
            timeout=api.timeout,
        )
    except (DockerException, requests.RequestException) as exc:
        raise DockerFailure(f"copying {path} out of the worker: {one_line(exc, 500)}") from exc
    if response.ok:
        return cast(requests.Response, response)
    with contextlib.closing(response):
        if response.status_code == 404:
            return None
        detail = response.raw.read(ERROR_BODY_LIMIT, decode_content=True)
    reason = " ".join(detail.decode("utf-8", errors="replace").split())
    raise DockerFailure(
        f"copying {path} out of the worker: Docker answered {response.status_code}: {reason}"
    )


def read_capped(chunks: Iterable[bytes], cap: int) -> dict[str, bytes]:
    """The output files (protocol.OUTPUT_FILES) of a streamed tar of out/, by name.
    Raises OutputTooLarge as soon as a member's declared size, the sum of the declared
    sizes or the bytes received pass `cap`; other members are read past, not kept. A
    damaged archive keeps what came before the damage."""
    stream = CappedStream(iter(chunks), cap)
    found: dict[str, bytes] = {}
    declared = 0
    try:
        with tarfile.open(fileobj=stream, mode="r|", bufsize=COPY_CHUNK) as tar:
            for member in tar:
                declared += member.size
                if declared > cap:
                    raise OutputTooLarge(_declared_too_large(member, declared, cap))
                name = bundle.name_in_out(member.name)
                if member.isreg() and name in protocol.OUTPUT_FILES:
                    extracted = tar.extractfile(member)
                    found[name] = extracted.read() if extracted is not None else b""
    except tarfile.TarError:
        pass
    return found


class CappedStream(io.RawIOBase):
    """A readable stream over chunks that counts them as they arrive and raises
    OutputTooLarge once more than `cap` bytes came: it holds one chunk at most."""

    def __init__(self, chunks: Iterator[bytes], cap: int, what: str = protocol.OUTPUT_DIR) -> None:
        super().__init__()
        self._chunks = chunks
        self._cap = cap
        self._what = what
        self._held = memoryview(b"")
        self.received = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        while not self._held:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._count(len(chunk))
            self._held = memoryview(chunk)
        target = memoryview(buffer).cast("B")
        size = min(len(target), len(self._held))
        target[:size] = self._held[:size]
        self._held = self._held[size:]
        return size

    def _count(self, size: int) -> None:
        self.received += size
        if self.received > self._cap:
            rule = f" ({_cap_rule()})" if self._what == protocol.OUTPUT_DIR else ""
            raise OutputTooLarge(
                f"the copy of {self._what} passed its cap of {self._cap} bytes{rule};"
                " it was stopped"
            )


def _declared_too_large(member: tarfile.TarInfo, declared: int, cap: int) -> str:
    so_far = "" if declared == member.size else f" ({declared} bytes with the files before it)"
    return (
        f"{member.name} in the copy of {protocol.OUTPUT_DIR} declares {member.size} bytes"
        f"{so_far}, past its cap of {cap} bytes ({_cap_rule()}); the copy was stopped"
    )


def _cap_rule() -> str:
    return f"MAX_RESULT_SIZE + 1 + {protocol.OUTPUT_MARGIN // (1024 * 1024)} MiB"
