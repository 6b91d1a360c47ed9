"""What a job leaves in /workspace comes back: through a live tower's Docker runner and the
real worker image, the files a job created or changed are listed and download
byte-identical, an input it left alone is not an artifact, a file past
MAX_ARTIFACT_BYTES is listed as omitted; a tar of a few MB comes out of the worker's
bundle volume (not its stdout) and downloads byte-identical; and a 200 MB artifact
(too large for the volume: on stdout) passes through a tower process (frame, store,
download) with its resident memory growing by under 64 MiB."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest

from tests.e2e.support import (
    describe,
    docker_settings,
    isolated_network,
    register_shell,
    shell_tower,
    socket_volume_name,
    submit,
    wait_terminal,
)
from tests.e2e.test_workspace_inputs import tar_gz, upload
from tests.support.rss import RssWatch
from tests.support.towers import start_tower

MiB = 1 << 20
BINARY = bytes(range(256)) * 80  # 20 KiB holding every byte value

CHANGES = """\
set -e
cd /workspace/src
printf 'edited\\n' >> edit.txt
mkdir -p new
python3 -c "import sys; sys.stdout.buffer.write(bytes(range(256)) * 80)" > new/out.bin
head -c 100000 /dev/zero > big.bin
ln -s keep.txt link
"""


@pytest.fixture
def network(docker_client: docker.DockerClient) -> Iterator[str]:
    yield from isolated_network(docker_client)


async def test_created_and_changed_files_come_back_and_the_cap_lists_omitted(
    database_url: str, network: str, worker_image: str
) -> None:
    settings = docker_settings(
        database_url, network, worker_image=worker_image, max_artifact_bytes=64 * 1024
    )
    tree = tar_gz({"keep.txt": (b"left alone\n", 0o644), "edit.txt": (b"before\n", 0o644)})
    async with shell_tower(settings) as client:
        source = await upload(client, tree, "application/gzip")
        inputs = [{"upload": source, "path": "src"}]
        job_id = await submit(client, CHANGES, inputs=inputs)
        record = await wait_terminal(client, job_id)
        assert record["status"] == "completed", describe(record)
        listed = (await client.get(f"/jobs/{job_id}/artifacts")).json()
        downloads = {
            entry["path"]: (await client.get(f"/jobs/{job_id}/artifacts/{entry['path']}")).content
            for entry in listed["files"]
        }

    assert downloads == {"src/edit.txt": b"before\nedited\n", "src/new/out.bin": BINARY}
    assert {entry["path"]: entry["sha256"] for entry in listed["files"]} == {
        path: hashlib.sha256(data).hexdigest() for path, data in downloads.items()
    }
    assert {(o["path"], o["size"], o["why"]) for o in listed["omitted"]} == {
        ("src/big.bin", 100000, "over the artifact limit (MAX_ARTIFACT_BYTES)"),
        ("src/link", len("keep.txt"), "a symbolic link"),
    }
    assert record["artifacts"]["files"] == 2
    assert record["artifacts"]["bytes"] == len(BINARY) + len(b"before\nedited\n")
    assert record["changes"] is None  # not a repository job


MEDIUM = 8 * MiB
MEDIUM_SCRIPT = (
    f"head -c {MEDIUM} /dev/urandom > /workspace/medium.bin && sha256sum /workspace/medium.bin"
)


async def test_a_tar_of_a_few_mb_comes_out_of_the_bundle_volume(
    database_url: str, network: str, worker_image: str
) -> None:
    settings = docker_settings(database_url, network, worker_image=worker_image)
    async with shell_tower(settings) as client:
        record = await wait_terminal(client, await submit(client, MEDIUM_SCRIPT))
        assert record["status"] == "completed", describe(record)
        job_id = record["job_id"]
        log = (await client.get(f"/jobs/{job_id}/events")).text
        data = (await client.get(f"/jobs/{job_id}/artifacts/medium.bin")).content

    assert re.search(r"parpaing: artifacts \(\d+ bytes\) left in the bundle volume", log), log
    assert len(data) == MEDIUM
    assert hashlib.sha256(data).hexdigest() == record["result"].split()[0]


BIG = 200 * 1000 * 1000
BIG_SCRIPT = f"head -c {BIG} /dev/urandom > /workspace/big.bin && sha256sum /workspace/big.bin"


async def test_a_200_mb_artifact_passes_through_tower_in_bounded_memory(
    database_url: str, network: str, worker_image: str, tmp_path: Path
) -> None:
    tower = await start_tower(
        database_url,
        tmp_path,
        "artifacts-rss",
        tower_runner="docker",
        worker_net=network,
        worker_image=worker_image,
        gateway_socket_volume=socket_volume_name(network),
        pool_size=0,
        poll_interval=0.2,
    )
    try:
        async with httpx.AsyncClient(base_url=tower.base_url, timeout=120) as client:
            await register_shell(client)
            async with RssWatch(tower.pid) as watch:
                record = await wait_terminal(client, await submit(client, BIG_SCRIPT))
                assert record["status"] == "completed", describe(record)
                digest, size = hashlib.sha256(), 0
                path = f"/jobs/{record['job_id']}/artifacts/big.bin"
                async with client.stream("GET", path) as response:
                    assert response.status_code == 200
                    async for piece in response.aiter_bytes():
                        digest.update(piece)
                        size += len(piece)
    finally:
        tower.terminate()

    assert size == BIG and record["result"].split()[0] == digest.hexdigest()
    print(f"tower RSS growth for a {BIG} byte artifact: {watch.growth / MiB:.1f} MiB")
    assert watch.growth < 64 * MiB, watch.growth
