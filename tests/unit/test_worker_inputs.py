"""A job's inputs through the bundle and the worker: the streamed bundle is a tar of
exactly its stated size, and the worker (a real process on this host) unpacks each
input into the workspace, refusing what would land outside it."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_execution_outcome import outcome, worker_output
from tests.unit.test_worker import Finished, WorkerProcess, base_spec, shell
from tower.execution.bundle import spec_document, streamed_bundle
from tower.execution.protocol import bundle_header
from tower.execution.runner import InputKind, WorkspaceInput
from tower.execution.spec import JobSpec


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.kill()


def staged(tmp: Path, name: str, data: bytes, kind: InputKind, path: str = "") -> WorkspaceInput:
    local = tmp / f"staged-{name}"
    local.write_bytes(data)
    filename = name if kind == "file" else None
    return WorkspaceInput(path, kind, filename, local, len(data))


def tar_of(*members: tuple[tarfile.TarInfo, bytes], gz: bool = False) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if gz else "w") as archive:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            archive.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buffer.getvalue()


def entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.mode = 0o644
    return info


def zip_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def run_with(
    tmp: Path, workers: list[WorkerProcess], inputs: list[WorkspaceInput], spec: JobSpec
) -> Finished:
    worker = WorkerProcess(tmp)
    workers.append(worker)
    bundle = streamed_bundle(spec, inputs)
    worker.send(bundle_header(bundle.size) + b"".join(bundle.pieces()))
    return worker.finish()


# --- the streamed bundle ------------------------------------------------------------------


@pytest.mark.parametrize("sizes", [(0,), (1, 511), (512, 513), (10_240, 3 * 1024 * 1024 + 7)])
def test_a_streamed_bundle_is_a_tar_of_exactly_its_stated_size(
    tmp_path: Path, sizes: tuple[int, ...]
) -> None:
    inputs = [
        staged(tmp_path, str(n), bytes([n % 251]) * size, "file", f"d{n}")
        for n, size in enumerate(sizes)
    ]
    spec = base_spec()
    bundle = streamed_bundle(spec, inputs)
    data = b"".join(bundle.pieces())

    assert len(data) == bundle.size
    assert bundle.size % tarfile.RECORDSIZE == 0
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        found = {m.name: tar.extractfile(m).read() if m.isreg() else None for m in tar}  # type: ignore[union-attr]
    assert json.loads(found["job/spec.json"] or b"") == spec_document(spec, inputs)
    for n, size in enumerate(sizes):
        assert found[f"job/inputs/{n}"] == bytes([n % 251]) * size
    assert json.loads(found["job/spec.json"] or b"")["inputs"][0] == {
        "source": "inputs/0",
        "path": "d0",
        "kind": "file",
        "filename": "0",
    }


def test_an_input_changed_after_staging_breaks_the_stream_not_the_frame(tmp_path: Path) -> None:
    one = staged(tmp_path, "x", b"12345", "file")
    bundle = streamed_bundle(base_spec(), [one])
    one.local.write_bytes(b"123")
    with pytest.raises(OSError, match="shorter"):
        b"".join(bundle.pieces())


# --- the worker unpacks -------------------------------------------------------------------


def test_files_and_archives_land_in_the_workspace_at_their_paths(
    tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    tgz = tar_of(
        (entry("pkg", tarfile.DIRTYPE), b""),
        (entry("pkg/a.txt"), b"alpha\n"),
        (entry("pkg/run.sh"), b"#!/bin/sh\n"),
        (entry("pkg/link", tarfile.SYMTYPE, "a.txt"), b""),
        (entry("pkg/hard", tarfile.LNKTYPE, "pkg/a.txt"), b""),
        gz=True,
    )
    inputs = [
        staged(tmp_path, "src.tgz", tgz, "tar.gz", "src"),
        staged(tmp_path, "notes.txt", b"single\n", "file", ""),
        staged(tmp_path, "z.zip", zip_of({"deep/b.txt": b"beta"}), "zip", "z/y"),
    ]
    spec = base_spec(argv=shell("cat src/pkg/link notes.txt z/y/deep/b.txt"), stdin=None)

    finished = run_with(tmp_path, workers, inputs, spec)

    result = finished.result
    assert (result["error"], result["exit_code"]) == (None, 0), result
    assert finished.file("stdout") == b"alpha\nsingle\nbeta"
    workspace = finished.root / "workspace"
    assert (workspace / "src/pkg/hard").read_bytes() == b"alpha\n"
    assert (workspace / "src/pkg/link").is_symlink()
    assert result["inputs"]["entries"] == 7  # 5 of the tar, the file, the zip's one
    assert result["inputs"]["bytes"] == len(b"alpha\n#!/bin/sh\nsingle\nbeta")
    assert isinstance(result["inputs"]["duration_ms"], int)
    # Unpacked, the inputs leave the bundle volume to the job's output.
    assert not list((tmp_path / "bundle" / "job" / "inputs").iterdir())


BAD_TARS: dict[str, list[tuple[tarfile.TarInfo, bytes]]] = {
    "climbs": [(entry("../escape"), b"x")],
    "absolute": [(entry("/tmp/escape"), b"x")],
    "device": [(entry("dev", tarfile.CHRTYPE), b"")],
    "fifo": [(entry("pipe", tarfile.FIFOTYPE), b"")],
    "link out": [(entry("out", tarfile.SYMTYPE, "../../.."), b"")],
    "absolute link": [(entry("out", tarfile.SYMTYPE, "/etc"), b"")],
    "hard link out": [(entry("out", tarfile.LNKTYPE, "../x"), b"")],
    # Each link alone reads as inside; together `t` is the workspace's parent.
    "links chained out": [
        (entry("s", tarfile.SYMTYPE, "."), b""),
        (entry("t", tarfile.SYMTYPE, "s/.."), b""),
        (entry("t/escape"), b"x"),
    ],
}


@pytest.mark.parametrize("name", list(BAD_TARS))
def test_a_tar_entry_that_would_land_outside_fails_the_job_before_it_runs(
    tmp_path: Path, workers: list[WorkerProcess], name: str
) -> None:
    inputs = [staged(tmp_path, "bad.tar", tar_of(*BAD_TARS[name]), "tar")]
    spec = base_spec(argv=shell("touch engine-ran"))

    finished = run_with(tmp_path, workers, inputs, spec)

    result = finished.result
    assert (result["phase"], result["reason"]) == ("worker", "input"), result
    assert result["error"].startswith("inputs[0] (tar into /workspace/): ")
    assert not (finished.root / "workspace" / "engine-ran").exists()
    assert not (tmp_path / "escape").exists() and not (finished.root / "escape").exists()
    assert outcome(worker_output(**result)).failure_reason == "input"


def test_a_zip_entry_that_climbs_out_is_refused(
    tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    inputs = [staged(tmp_path, "bad.zip", zip_of({"../escape": b"x"}), "zip")]
    finished = run_with(tmp_path, workers, inputs, base_spec(argv=shell("touch engine-ran")))
    assert finished.result["reason"] == "input"
    assert "leads outside" in finished.result["error"]
    assert not (finished.root / "escape").exists()


def test_a_damaged_archive_fails_the_job_saying_so(
    tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    inputs = [staged(tmp_path, "bad.tgz", b"not gzip at all", "tar.gz")]
    finished = run_with(tmp_path, workers, inputs, base_spec())
    result: dict[str, Any] = finished.result
    assert result["reason"] == "input" and result["error"].startswith("inputs[0] (tar.gz")
