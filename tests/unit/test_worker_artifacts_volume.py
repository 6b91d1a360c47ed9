"""The worker leaves a large artifacts tar in its bundle volume, announced by its own
line, and sends it on stdout instead when it is small, when the volume or the
container's memory has no room for it, or when writing it fails: the same tar bytes
either way. The worker's artifacts module, in this process; the container's memory
(cgroup files) is the one edge faked."""

from __future__ import annotations

import importlib.util
import io
import sys
import tarfile
from pathlib import Path
from types import ModuleType

import pytest

from tower.execution import protocol

WORKER_ARTIFACTS = Path(__file__).resolve().parents[2] / "worker" / "artifacts.py"
MiB = 1 << 20


@pytest.fixture
def artifacts() -> ModuleType:
    spec = importlib.util.spec_from_file_location("worker_artifacts", WORKER_ARTIFACTS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def collected_in(artifacts: ModuleType, workspace: Path, size: int) -> object:
    workspace.mkdir()
    before = artifacts.snapshot(workspace)
    (workspace / "out.bin").write_bytes(bytes(range(256)) * (size // 256))
    return artifacts.collect(workspace, before, 1 << 30, None)


@pytest.fixture
def large(artifacts: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    """What a job that wrote a 2 MiB file collects, in a container with memory to spare."""
    monkeypatch.setattr(artifacts, "_free_memory", lambda: 1 << 40)
    return collected_in(artifacts, tmp_path / "workspace", 2 * MiB)


def members(tar_bytes: bytes) -> dict[str, int]:
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tar:
        return {member.name: member.size for member in tar}


def test_a_large_tar_goes_to_the_volume_announced_by_its_line(
    artifacts: ModuleType, tmp_path: Path, large: object
) -> None:
    volume = tmp_path / "artifacts.tar"
    stdout = io.BytesIO()

    said = artifacts.send(large, tmp_path / "workspace", stdout, volume)

    size = volume.stat().st_size
    assert stdout.getvalue() == protocol.artifacts_file_header(size)
    assert members(volume.read_bytes())["files/out.bin"] == 2 * MiB
    assert said is not None and str(size) in said


@pytest.mark.parametrize(
    ("size", "memory"),
    [
        (protocol.ARTIFACTS_FILE_MIN // 2, 1 << 40),  # small: the frame is cheaper
        (2 * MiB, 2 * MiB),  # the container's memory has no room for a copy
        (2 * MiB, 0),  # its memory bound unknown
    ],
)
def test_otherwise_the_tar_goes_on_stdout_and_nothing_is_left(
    artifacts: ModuleType,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    size: int,
    memory: int,
) -> None:
    monkeypatch.setattr(artifacts, "_free_memory", lambda: memory)
    collected = collected_in(artifacts, tmp_path / "workspace", size)
    volume = tmp_path / "artifacts.tar"
    stdout = io.BytesIO()

    assert artifacts.send(collected, tmp_path / "workspace", stdout, volume) is None

    header, _, tar_bytes = stdout.getvalue().partition(b"\n")
    assert header + b"\n" == protocol.artifacts_header(len(tar_bytes))
    assert members(tar_bytes)["files/out.bin"] == size
    assert not volume.exists()


def test_a_failed_write_leaves_nothing_and_falls_back_to_stdout(
    artifacts: ModuleType, tmp_path: Path, large: object
) -> None:
    volume = tmp_path / "missing-dir" / "artifacts.tar"  # no such directory: open fails
    stdout = io.BytesIO()

    assert artifacts.send(large, tmp_path / "workspace", stdout, volume) is None
    assert stdout.getvalue().startswith(protocol.ARTIFACTS_MARK)
    assert not volume.exists()


def test_a_link_the_job_left_at_the_path_is_replaced_not_followed(
    artifacts: ModuleType, tmp_path: Path, large: object
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(b"not the worker's")
    volume = tmp_path / "artifacts.tar"
    volume.symlink_to(elsewhere)

    assert artifacts.send(large, tmp_path / "workspace", io.BytesIO(), volume) is not None
    assert not volume.is_symlink() and elsewhere.read_bytes() == b"not the worker's"


def test_the_memory_left_is_read_from_the_cgroup_files(
    artifacts: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "max").write_text("1000\n")
    (tmp_path / "current").write_text("400\n")
    (tmp_path / "unbounded").write_text("max\n")
    files = [
        (str(tmp_path / "absent"), str(tmp_path / "absent")),
        (str(tmp_path / "max"), str(tmp_path / "current")),
    ]
    monkeypatch.setattr(artifacts, "CGROUP_MEMORY", files)
    assert artifacts._free_memory() == 600
    monkeypatch.setattr(
        artifacts, "CGROUP_MEMORY", [(str(tmp_path / "unbounded"), str(tmp_path / "current"))]
    )
    assert artifacts._free_memory() > 1 << 40
    monkeypatch.setattr(artifacts, "CGROUP_MEMORY", [])
    assert artifacts._free_memory() == 0
