"""Tower's side of the artifacts frame: spooled to a private file as it streams, kept only
when the worker's output frame follows it (the last one wins, so an engine's lookalike
is superseded), read past when over the cap, and never left behind. A tar the worker
left in its volume instead is announced by its own line, with the same rules, and
copied out of the archive Docker streams only when it is the file announced."""

from __future__ import annotations

import io
import stat
import tarfile
import tempfile
from pathlib import Path

import pytest

from tower.execution.docker.archive import _spool_member
from tower.execution.docker.worker_stdout import Handover, InVolume, Spool, WorkerStdout
from tower.execution.protocol import (
    DONE_LINE,
    artifacts_file_header,
    artifacts_header,
    output_header,
)


def frames(*parts: bytes) -> bytes:
    return b"".join(parts)


def artifacts(payload: bytes) -> bytes:
    return artifacts_header(len(payload)) + payload


def output(payload: bytes = b"out") -> bytes:
    return output_header(len(payload)) + payload


def fed(data: bytes, cap: int = 1 << 20, piece: int = 7) -> tuple[WorkerStdout, bytes]:
    log: list[bytes] = []
    stdout = WorkerStdout(lambda _s, chunk: log.append(chunk), 1 << 20, cap)
    for at in range(0, len(data), piece):
        if stdout.feed(data[at : at + piece]):
            break
    return stdout, b"".join(log)


def test_the_artifacts_frame_is_spooled_to_a_private_file_not_logged() -> None:
    stdout, log = fed(frames(b"engine says hi\n", artifacts(b"A" * 5000), output(), DONE_LINE))
    path = stdout.take_artifacts()
    assert path is not None and path.read_bytes() == b"A" * 5000
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert log == b"engine says hi\n" and stdout.output == b"out"
    path.unlink()


def test_the_workers_empty_frame_supersedes_an_engines_lookalike() -> None:
    forged = artifacts(b"forged")
    stdout, log = fed(frames(forged, b"more\n", artifacts(b""), output(), DONE_LINE))
    assert stdout.take_artifacts() is None and log == b"more\n"


def test_artifacts_without_an_output_frame_after_them_are_not_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    stdout, _ = fed(frames(output(), artifacts(b"late"), DONE_LINE))
    assert stdout.take_artifacts() is None
    assert list(tmp_path.iterdir())  # spooled, held until discarded
    stdout.discard()
    assert not list(tmp_path.iterdir())


def test_a_frame_over_the_cap_is_read_past_and_not_kept() -> None:
    stdout, log = fed(frames(artifacts(b"B" * 100), b"after\n", output(), DONE_LINE), cap=99)
    assert stdout.take_artifacts() is None and stdout.output == b"out" and log == b"after\n"


def test_a_handover_after_the_run_let_go_removes_the_file(tmp_path: Path) -> None:
    late = tmp_path / "late"
    late.write_bytes(b"x")
    handover = Handover()
    handover.discard()
    handover.give(late)
    assert not late.exists() and handover.take() is None


def test_a_tar_left_in_the_volume_is_announced_and_kept_like_a_frame() -> None:
    stdout, log = fed(frames(b"hi\n", artifacts_file_header(5000), output(), DONE_LINE))
    assert stdout.take_artifacts() == InVolume(5000) and log == b"hi\n"


def test_a_volume_tar_is_superseded_by_a_later_frame_and_kept_to_the_cap() -> None:
    later = frames(artifacts_file_header(5000), artifacts(b""), output(), DONE_LINE)
    assert fed(later)[0].take_artifacts() is None
    over = frames(artifacts_file_header(100), output(), DONE_LINE)
    assert fed(over, cap=99)[0].take_artifacts() is None
    unfollowed = frames(output(), artifacts_file_header(10), DONE_LINE)
    assert fed(unfollowed)[0].take_artifacts() is None


def test_a_handover_tells_what_is_still_in_the_volume() -> None:
    handover = Handover()
    handover.give(InVolume(7))
    assert handover.in_volume() == InVolume(7)
    handover.discard()  # nothing to remove for a tar still in the volume
    assert handover.in_volume() is None


def docker_archive(name: str, content: bytes, kind: bytes = tarfile.REGTYPE) -> list[bytes]:
    """What Docker streams for GET /archive of one file, in uneven pieces."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.size = len(content) if kind == tarfile.REGTYPE else 0
        tar.addfile(info, io.BytesIO(content) if kind == tarfile.REGTYPE else None)
    raw = buffer.getvalue()
    return [raw[at : at + 777] for at in range(0, len(raw), 777)]


def test_the_announced_file_is_copied_out_of_dockers_archive() -> None:
    spool = Spool()
    assert _spool_member(docker_archive("artifacts.tar", b"T" * 3000), 3000, spool)
    path = spool.close()
    assert path.read_bytes() == b"T" * 3000
    path.unlink()


@pytest.mark.parametrize(
    "archive",
    [
        docker_archive("artifacts.tar", b"T" * 2999),  # not the size announced
        docker_archive("artifacts.tar", b"", tarfile.SYMTYPE),  # not a regular file
        [b"not a tar at all" * 100],
    ],
)
def test_anything_but_the_announced_file_is_not_copied(archive: list[bytes]) -> None:
    spool = Spool()
    assert not _spool_member(archive, 3000, spool)
    spool.discard()


def test_an_archive_past_the_announced_size_is_stopped() -> None:
    spool = Spool()
    assert not _spool_member(docker_archive("artifacts.tar", b"T" * 200_000), 1000, spool)
    spool.discard()
