"""A job cannot exhaust its tower's memory through its output: a 50 GB sparse file.

A sparse file fits in the tmpfs of /bundle/out (1 MB or 50 GB, it takes no room) yet
reads as 50 GB. Both ways tower gets a worker's output are covered, with the real worker
image: the worker's frame (the worker refuses the file before reading it) and the
get_archive copy when no frame arrives (the job kills its worker; tower's copy stops at
the cap). The tower runs in this process, so its peak memory is this process's VmHWM,
reset just before the job (clear_refs "5").
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.e2e.support import describe, docker_settings, isolated_network, run_job, shell_tower

SPARSE = 50 * 1024**3
MAX_GROWTH = 64 * 1024 * 1024


@pytest.fixture
def network(docker_client: docker.DockerClient) -> Iterator[str]:
    yield from isolated_network(docker_client)


def _status_bytes(field: str) -> int:
    found = re.search(rf"^{field}:\s+(\d+) kB$", Path("/proc/self/status").read_text(), re.M)
    assert found is not None, field
    return int(found.group(1)) * 1024


class PeakGrowth:
    """How far this process's peak RSS rose over its RSS at the start."""

    def __enter__(self) -> PeakGrowth:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
        self.before = _status_bytes("VmRSS")
        return self

    def __exit__(self, *_: object) -> None:
        self.grown = _status_bytes("VmHWM") - self.before


async def test_a_sparse_stdout_is_refused_by_the_worker_and_tower_stays_small(
    database_url: str, network: str, worker_image: str
) -> None:
    # The engine's stdout file swells to 50 GB under the worker writing it.
    script = f"truncate -s {SPARSE} /bundle/out/stdout; echo written"
    settings = docker_settings(database_url, network)
    async with shell_tower(settings) as client:
        with PeakGrowth() as peak:
            record = await run_job(client, script)
    print(f"tower peak RSS growth: {peak.grown / 1024 / 1024:.1f} MiB")
    assert record["status"] == "failed", describe(record)
    assert record["failure_reason"] == "result_too_large", describe(record)
    assert f"out/stdout is {SPARSE} bytes" in record["error"], describe(record)
    assert peak.grown < MAX_GROWTH


async def test_a_sparse_file_copied_when_no_frame_came_stops_at_the_cap(
    database_url: str, network: str, worker_image: str
) -> None:
    # The engine's parent is the worker: killed, it sends no frame, and tower copies
    # /bundle/out, where the job left a 50 GB file.
    script = f"truncate -s {SPARSE} /bundle/out/big; kill -9 $PPID"
    settings = docker_settings(database_url, network)
    async with shell_tower(settings) as client:
        with PeakGrowth() as peak:
            record = await run_job(client, script)
    print(f"tower peak RSS growth: {peak.grown / 1024 / 1024:.1f} MiB")
    assert record["status"] == "failed", describe(record)
    assert record["failure_reason"] == "result_too_large", describe(record)
    assert f"out/big in the copy of /bundle/out declares {SPARSE} bytes" in record["error"]
    assert peak.grown < MAX_GROWTH
