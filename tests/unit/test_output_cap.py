"""The output cap: neither side reads a worker's /bundle/out past protocol.output_cap.

Tower's copy (tower/execution/docker/archive.read_capped) reads tar headers as they
stream and stops at the first member or byte past the cap; the worker (worker.py's
send_output, run here as a real process) measures each file before it reads it and
sends result.json alone, saying the result was too large, when the files would pass.
"""

from __future__ import annotations

import io
import itertools
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.test_worker import WorkerProcess, base_spec, run, shell
from tower.execution import protocol
from tower.execution.bundle import read_output
from tower.execution.docker.archive import OutputTooLarge, read_capped
from tower.execution.docker.worker_stdout import WorkerStdout
from tower.execution.protocol import DONE_LINE

CAP = 1 << 20
CHUNK = 64 * 1024
SPARSE_SIZE = 50 * 1024**3


def out_tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(f"out/{name}")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


class Counted:
    """Chunks of a stream, counting how many were taken."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self.taken = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            self.taken += len(chunk)
            yield chunk


def sparse_member_stream(size: int) -> Iterator[bytes]:
    """A tar whose one member declares `size` bytes, then zeros without end, as
    get_archive streams a sparse file: nothing of it exists until it is read."""
    info = tarfile.TarInfo("out/stdout")
    info.size = size
    yield info.tobuf(tarfile.PAX_FORMAT)
    yield from itertools.repeat(bytes(CHUNK))


# --- tower's copy -------------------------------------------------------------------------


def test_the_copy_keeps_the_output_files_and_drops_the_rest() -> None:
    raw = out_tar({"stdout": b"out", "stderr": b"err", "result.json": b"{}", "other": b"x"})
    chunks = [raw[i : i + 1000] for i in range(0, len(raw), 1000)]
    found = read_capped(chunks, CAP)
    assert found == {"stdout": b"out", "stderr": b"err", "result.json": b"{}"}


def test_a_member_declaring_more_than_the_cap_stops_the_copy_at_its_header() -> None:
    stream = Counted(sparse_member_stream(SPARSE_SIZE))
    with pytest.raises(OutputTooLarge) as refused:
        read_capped(stream, CAP)
    assert f"declares {SPARSE_SIZE} bytes" in refused.value.message
    assert f"past its cap of {CAP} bytes" in refused.value.message
    assert stream.taken <= CHUNK + tarfile.BLOCKSIZE  # its header, not its body


def test_members_that_pass_the_cap_together_stop_the_copy() -> None:
    half = bytes(CAP // 2 + 1)
    raw = out_tar({"stdout": half, "stderr": half})
    with pytest.raises(OutputTooLarge, match=r"out/stderr .* with the files before it"):
        read_capped([raw[i : i + CHUNK] for i in range(0, len(raw), CHUNK)], CAP)


def test_bytes_past_the_cap_stop_the_copy_even_when_no_member_declares_them() -> None:
    # Thousands of empty members: each header is 512 bytes that no size declares.
    many = out_tar({f"f{index}": b"" for index in range(4000)})
    stream = Counted(iter([many[i : i + CHUNK] for i in range(0, len(many), CHUNK)]))
    with pytest.raises(OutputTooLarge, match="passed its cap"):
        read_capped(stream, CAP)
    assert stream.taken <= CAP + CHUNK


def test_a_damaged_copy_keeps_what_came_before_the_damage() -> None:
    raw = out_tar({"stdout": b"kept", "stderr": bytes(5000)})
    assert read_capped([raw[:2000]], CAP) == {"stdout": b"kept"}


# --- the worker's frame -------------------------------------------------------------------


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.kill()


def sent_frame(stdout: bytes, output_limit: int) -> bytes | None:
    """The frame tower would keep from the worker's stdout (None: none it would keep)."""
    follower = WorkerStdout(lambda _stream, _data: None, protocol.output_cap(output_limit))
    follower.feed(stdout + DONE_LINE)
    return follower.output


def test_a_sparse_file_in_out_is_refused_by_the_worker_without_reading_it(
    tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    # Larger than the cap, small enough that the old worker (which read it whole)
    # could be shown failing on this host without harm.
    out = tmp_path / "bundle" / "out"
    spec = base_spec(
        output_limit=1024,
        env={"OUT": str(out)},
        post_hook=f'truncate -s {64 * 1024 * 1024} "$OUT/stdout"',
    )
    finished = run(tmp_path, workers, spec)
    assert finished.returncode == 0
    frame = sent_frame(finished.stdout, 1024)
    assert frame is not None, "no frame tower would keep"
    sent = read_output(frame)
    assert sent.result is not None
    assert sent.result["reason"] == protocol.RESULT_TOO_LARGE
    assert f"out/stdout is {64 * 1024 * 1024} bytes" in sent.result["error"]
    assert sent.result["phase"] == "engine"  # the job's own report, kept
    assert finished.result["reason"] == protocol.RESULT_TOO_LARGE  # on disk as well


def test_a_frame_within_the_cap_streams_every_output_file(
    tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    spec = base_spec(argv=shell("head -c 3000 /dev/zero; echo oops >&2"), output_limit=4096)
    finished = run(tmp_path, workers, spec)
    frame = sent_frame(finished.stdout, 4096)
    assert frame is not None
    sent = read_output(frame)
    assert sent.stdout == bytes(3000) and sent.stderr == "oops\n"
    assert sent.result == finished.result and sent.result["error"] is None


def test_links_in_out_are_not_followed(tmp_path: Path, workers: list[WorkerProcess]) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"not the job's")
    out = tmp_path / "bundle" / "out"
    # The engine's stdout goes on into the unlinked file; the link takes its name.
    spec = base_spec(
        env={"OUT": str(out), "SECRET": str(secret)},
        post_hook='rm -f "$OUT/stdout"; ln -s "$SECRET" "$OUT/stdout"',
    )
    finished = run(tmp_path, workers, spec)
    frame = sent_frame(finished.stdout, spec.output_limit)
    assert frame is not None
    with tarfile.open(fileobj=io.BytesIO(frame)) as tar:
        names = tar.getnames()
    assert "out/stdout" not in names
    assert read_output(frame).stdout == b""
