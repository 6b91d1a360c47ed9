"""Uploads land in a real worker's /workspace: through a live tower's Docker runner, the
real worker image unpacks a tar.gz and places a single file at the paths the job names,
before its script runs; a job whose upload was deleted before it started fails with
failure_reason "input" and starts no container."""

from __future__ import annotations

import io
import re
import tarfile
from collections.abc import Iterator

import docker
import httpx
import pytest

from tests.e2e.support import (
    describe,
    docker_settings,
    isolated_network,
    shell_tower,
    submit,
    wait_terminal,
)

LISTING = """\
cd /workspace
find . -path ./.cache -prune -o -print | sort
echo ---
cat src/pkg/a.txt notes/readme.md
stat -c '%u %a %n' src/pkg/run.sh notes/readme.md
"""


@pytest.fixture
def network(docker_client: docker.DockerClient) -> Iterator[str]:
    yield from isolated_network(docker_client)


def tar_gz(files: dict[str, tuple[bytes, int]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, (data, mode) in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


async def upload(client: httpx.AsyncClient, data: bytes, content_type: str, query: str = "") -> str:
    response = await client.post(
        f"/uploads{query}", content=data, headers={"Content-Type": content_type}
    )
    assert response.status_code == 201, response.text
    upload_id: str = response.json()["upload_id"]
    return upload_id


async def test_a_tar_gz_and_a_file_land_in_the_workspace_at_their_paths(
    database_url: str, network: str, worker_image: str
) -> None:
    settings = docker_settings(database_url, network, worker_image=worker_image)
    archive = tar_gz({"pkg/a.txt": (b"alpha\n", 0o644), "pkg/run.sh": (b"#!/bin/sh\n", 0o755)})
    async with shell_tower(settings) as client:
        tree = await upload(client, archive, "application/gzip")
        note = await upload(client, b"# notes\n", "application/octet-stream", "?filename=readme.md")
        inputs = [{"upload": tree, "path": "src"}, {"upload": note, "path": "notes"}]
        record = await wait_terminal(client, await submit(client, LISTING, inputs=inputs))
        log = await client.get(f"/jobs/{record['job_id']}/events")

    assert record["status"] == "completed", describe(record)
    # The job's log says what was staged on tower and what the worker unpacked, and how long.
    assert "parpaing: staged 2 input(s)" in log.text
    assert re.search(r"parpaing: unpacked 3 input entries, \d+ bytes, in \d+ ms", log.text)
    listing, _, rest = record["result"].partition("---\n")
    assert listing.split() == [
        ".",
        "./notes",
        "./notes/readme.md",
        "./src",
        "./src/pkg",
        "./src/pkg/a.txt",
        "./src/pkg/run.sh",
    ]
    assert rest.splitlines() == [
        "alpha",
        "# notes",
        "1000 755 src/pkg/run.sh",
        "1000 644 notes/readme.md",
    ]
    assert record["inputs"] == inputs


async def test_a_job_whose_upload_was_deleted_fails_with_reason_input(
    database_url: str, network: str, worker_image: str
) -> None:
    settings = docker_settings(
        database_url, network, worker_image=worker_image, max_concurrent_jobs=1
    )
    async with shell_tower(settings) as client:
        gone = await upload(client, b"soon gone", "application/octet-stream", "?filename=x")
        # The one slot is busy (the older job is claimed first), so the job with the
        # input waits pending while its upload is deleted.
        blocker = await submit(client, "sleep 600")
        job_id = await submit(client, "touch /workspace/ran", inputs=[{"upload": gone}])
        assert (await client.delete(f"/uploads/{gone}")).status_code == 204
        assert (await client.delete(f"/jobs/{blocker}")).status_code == 200
        record = await wait_terminal(client, job_id)

    assert (record["status"], record["failure_reason"]) == ("failed", "input"), describe(record)
    assert "was deleted before the job started" in record["error"]
