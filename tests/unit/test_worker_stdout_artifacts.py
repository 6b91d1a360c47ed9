"""Tower's side of the artifacts frame: spooled to a private file as it streams, kept only
when the worker's output frame follows it (the last one wins, so an engine's lookalike
is superseded), read past when over the cap, and never left behind."""

from __future__ import annotations

import stat
import tempfile
from pathlib import Path

import pytest

from tower.execution.docker.worker_stdout import Handover, WorkerStdout
from tower.execution.protocol import DONE_LINE, artifacts_header, output_header


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
