"""A job's artifacts through real HTTP against a real tower and its PostgreSQL: the real
worker's artifacts frame (a worker process on this host, a real git repository), read
by tower's own stdout reader, stored by the dispatcher's store step, then listed,
downloaded whole or by range, as a tar.gz, and the diff applied to a fresh clone; an
attempt's artifacts replace the last one's, a lost lease keeps none, and retention
deletes them with their job."""

from __future__ import annotations

import gzip
import io
import tarfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.cli import parpaing
from tests.support.live import client_for, live_tower
from tests.support.towers import insert_job
from tests.unit.test_worker import WorkerProcess, base_spec, shell, started, workers
from tests.unit.test_worker_artifacts import git, repository
from tower.artifacts import store
from tower.db import chunks
from tower.db.pool import Pool
from tower.execution.docker.worker_stdout import WorkerStdout
from tower.execution.protocol import DONE_LINE
from tower.queue.retention import Retention
from tower.settings import Settings

__all__ = ["workers"]  # the fixture

KEY = "artifacts-test-key"
SCRIPT = """
printf 'hello\\nthere\\nworld\\n' > README.md
head -c 3000000 /dev/urandom > big.bin
printf '\\x00\\x01binary' >> old.bin
rm remove.txt
mkdir -p src && printf 'print(1)\\n' > src/main.py
"""


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(database_url=database_url, tower_runner="simulated", tower_api_key=KEY)
    async with live_tower(settings) as url, client_for(url, KEY) as client:
        yield client


async def claimed(db: Any) -> store.Attempt:
    """A running job as a dispatcher holds it (the live tower's own dispatcher never
    claims it: it is not due for an hour)."""
    job_id = await insert_job(db, "p", max_attempts=2, delay_seconds=3600)
    token = uuid.uuid4()
    await db.execute(
        "UPDATE jobs SET status = 'running', attempt = 1, lease_token = $2 WHERE job_id = $1",
        job_id,
        token,
    )
    return store.Attempt(job_id, token, 1)


def worker_frame(tmp: Path, workers: list[WorkerProcess], script: str, **spec: Any) -> Path:
    """Run the real worker and read its stdout as the Docker runner does."""
    worker = started(tmp, workers)
    prepare = spec.pop("prepare", None)
    if prepare is not None:
        prepare(worker.root / "workspace")
    worker.start(base_spec(argv=shell(script), artifact_limit=1 << 30, **spec))
    stdout = WorkerStdout(lambda _s, _d: None, 1 << 24, 2 << 30)
    assert stdout.feed(worker.finish().stdout + DONE_LINE)
    path = stdout.take_artifacts()
    assert path is not None
    return path


@pytest.fixture
def origin(tmp_path: Path) -> tuple[Path, str]:
    source = tmp_path / "origin"
    source.mkdir()
    repository(source)
    return source, git(source, "rev-parse", "HEAD").strip()


def cloned(source: Path) -> Any:
    def clone(workspace: Path) -> None:
        git(workspace.parent, "clone", "-q", str(source), str(workspace))

    return clone


async def test_a_repository_jobs_artifacts_and_diff_are_served(
    tmp_path: Path,
    workers: list[WorkerProcess],
    origin: tuple[Path, str],
    pool: Pool,
    db: Any,
    client: httpx.AsyncClient,
) -> None:
    source, commit = origin
    frame = worker_frame(tmp_path, workers, SCRIPT, workspace_commit=commit, prepare=cloned(source))
    job = await claimed(db)
    assert await store.store(pool, job, frame)
    workspace = tmp_path / "root" / "workspace"

    listed = (await client.get(f"/jobs/{job.job_id}/artifacts")).json()
    assert [entry["path"] for entry in listed["files"]] == [
        "README.md",
        "big.bin",
        "old.bin",
        "src/main.py",
    ]
    assert listed["deleted"] == ["remove.txt"] and listed["omitted"] == []
    assert listed["changes"] == {"files": 5, "insertions": 2, "deletions": 1}
    record = (await client.get(f"/jobs/{job.job_id}")).json()
    assert record["changes"] == listed["changes"]
    assert record["artifacts"]["files"] == 4

    big = (workspace / "big.bin").read_bytes()
    whole = await client.get(f"/jobs/{job.job_id}/artifacts/big.bin")
    assert whole.status_code == 200 and whole.content == big
    assert whole.headers["accept-ranges"] == "bytes"
    part = await client.get(
        f"/jobs/{job.job_id}/artifacts/big.bin", headers={"Range": "bytes=1048570-2097160"}
    )
    assert part.status_code == 206 and part.content == big[1048570:2097161]
    assert part.headers["content-range"] == f"bytes 1048570-2097160/{len(big)}"
    tail = await client.get(f"/jobs/{job.job_id}/artifacts/big.bin", headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == big[-10:]
    beyond = await client.get(
        f"/jobs/{job.job_id}/artifacts/big.bin", headers={"Range": f"bytes={len(big)}-"}
    )
    assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{len(big)}"
    nested = await client.get(f"/jobs/{job.job_id}/artifacts/src/main.py")
    assert nested.content == b"print(1)\n"

    archive = await client.get(f"/jobs/{job.job_id}/artifacts.tar.gz")
    assert archive.headers["content-type"] == "application/gzip"
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(archive.content))) as tar:
        unpacked = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]
    assert unpacked == {name: (workspace / name).read_bytes() for name in unpacked}
    assert sorted(unpacked) == ["README.md", "big.bin", "old.bin", "src/main.py"]

    diff = await client.get(f"/jobs/{job.job_id}/diff")
    assert diff.status_code == 200 and diff.headers["content-type"].startswith("text/x-diff")
    fresh = tmp_path / "fresh"
    git(tmp_path, "clone", "-q", str(source), str(fresh))
    git(fresh, "checkout", "-q", commit)
    (tmp_path / "served.patch").write_bytes(diff.content)
    git(fresh, "apply", "--check", str(tmp_path / "served.patch"))
    git(fresh, "apply", str(tmp_path / "served.patch"))
    for name in ("README.md", "big.bin", "old.bin", "src/main.py"):
        assert (fresh / name).read_bytes() == (workspace / name).read_bytes(), name


async def test_unknown_jobs_paths_and_escapes_are_404(
    tmp_path: Path, workers: list[WorkerProcess], pool: Pool, db: Any, client: httpx.AsyncClient
) -> None:
    frame = worker_frame(tmp_path, workers, "echo hi > a.txt")
    job = await claimed(db)
    assert await store.store(pool, job, frame)

    for path in (
        f"/jobs/{job.job_id}/artifacts/missing.txt",
        f"/jobs/{job.job_id}/artifacts/..%2F..%2Fetc%2Fpasswd",
        f"/jobs/{job.job_id}/artifacts/x%2F..%2Fa.txt",
        f"/jobs/{job.job_id}/diff",  # not a repository job
        "/jobs/a-000000000000/artifacts",
        "/jobs/a-000000000000/artifacts/a.txt",
        "/jobs/a-000000000000/artifacts.tar.gz",
        "/jobs/a-000000000000/diff",
    ):
        response = await client.get(path)
        assert response.status_code == 404, (path, response.text)
        assert response.json()["detail"], path
    assert (await client.get(f"/jobs/{job.job_id}/artifacts/a.txt")).content == b"hi\n"


async def test_an_attempt_replaces_the_last_ones_and_a_lost_lease_keeps_none(
    tmp_path: Path, workers: list[WorkerProcess], pool: Pool, db: Any, client: httpx.AsyncClient
) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    first = worker_frame(tmp_path / "one", workers, "echo 1 > first.txt")
    second = worker_frame(tmp_path / "two", workers, "echo 2 > second.txt")
    job = await claimed(db)
    assert await store.store(pool, job, first)
    assert await store.store(pool, job, second)  # a re-run of the same attempt
    listed = (await client.get(f"/jobs/{job.job_id}/artifacts")).json()
    assert [entry["path"] for entry in listed["files"]] == ["second.txt"]

    stale = store.Attempt(job.job_id, uuid.uuid4(), job.attempt)
    assert not await store.store(pool, stale, first)
    listed = (await client.get(f"/jobs/{job.job_id}/artifacts")).json()
    assert [entry["path"] for entry in listed["files"]] == ["second.txt"]

    assert await store.store(pool, job, None)  # a later attempt that left none
    listed = (await client.get(f"/jobs/{job.job_id}/artifacts")).json()
    assert (
        listed["files"] == []
        and (await client.get(f"/jobs/{job.job_id}")).json()["artifacts"] is None
    )


async def test_retention_deletes_artifacts_with_their_job(
    tmp_path: Path, workers: list[WorkerProcess], pool: Pool, db: Any, database_url: str
) -> None:
    frame = worker_frame(tmp_path, workers, "head -c 2500000 /dev/zero > z")
    job = await claimed(db)
    assert await store.store(pool, job, frame)
    rows = -(-2_500_000 // chunks.CHUNK_BYTES)
    assert await db.fetchval("SELECT count(*) FROM job_artifact_chunks") == rows
    await db.execute(
        "UPDATE jobs SET status = 'completed', finished_at = now() - interval '30 hours',"
        " lease_token = NULL WHERE job_id = $1",
        job.job_id,
    )
    settings = Settings(database_url=database_url, job_ttl_hours=24)
    await Retention(settings, pool).clean_once()
    assert await db.fetchval("SELECT count(*) FROM job_artifacts") == 0
    assert await db.fetchval("SELECT count(*) FROM job_artifact_chunks") == 0


async def test_the_cli_lists_downloads_and_prints_the_diff(
    tmp_path: Path,
    workers: list[WorkerProcess],
    origin: tuple[Path, str],
    pool: Pool,
    db: Any,
    client: httpx.AsyncClient,
) -> None:
    source, commit = origin
    frame = worker_frame(tmp_path, workers, SCRIPT, workspace_commit=commit, prepare=cloned(source))
    job = await claimed(db)
    assert await store.store(pool, job, frame)
    url = str(client.base_url).rstrip("/")
    workspace = tmp_path / "root" / "workspace"

    listed = await parpaing(url, "artifacts", job.job_id, api_key=KEY)
    assert listed.code == 0, listed.stderr
    assert "src/main.py" in listed.stdout and "deleted  remove.txt" in listed.stdout
    assert "changes: 5 file(s), +2 -1" in listed.stdout

    out = tmp_path / "out"
    fetched = await parpaing(url, "artifacts", job.job_id, "--out", str(out), api_key=KEY)
    assert fetched.code == 0, fetched.stderr
    found = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert found == ["README.md", "big.bin", "old.bin", "src/main.py"]
    for name in found:
        assert (out / name).read_bytes() == (workspace / name).read_bytes()

    patch = await parpaing(url, "diff", job.job_id, api_key=KEY)
    served = (await client.get(f"/jobs/{job.job_id}/diff")).text
    assert patch.code == 0 and patch.stdout == served
    missing = await parpaing(url, "diff", "a-000000000000", api_key=KEY)
    assert missing.code != 0 and "not found" in missing.stderr


def hostile_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    manifest = b'{"version": 1, "files": [], "omitted": [{"path": "x\\u0000y", "size": -1}]}'
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("manifest.json")
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return path


def member(name: str, kind: bytes = tarfile.REGTYPE, **pax: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.pax_headers = kind, pax
    return info


async def test_a_tar_that_is_not_the_workers_keeps_only_plain_files(
    tmp_path: Path, pool: Pool, db: Any, client: httpx.AsyncClient
) -> None:
    """Anything in the container may have written on its stdout: escaping names, links,
    an extended header too large to read, too many members are not stored."""
    job = await claimed(db)
    escaping = hostile_tar(
        tmp_path / "escaping.tar",
        [
            (member("files/../../etc/x"), b"no"),
            (member("files//abs"), b"no"),
            (member("files/link", tarfile.SYMTYPE), b""),
            (member("other/y"), b"no"),
            (member("files/ok.txt"), b"yes"),
        ],
    )
    assert await store.store(pool, job, escaping)
    listed = (await client.get(f"/jobs/{job.job_id}/artifacts")).json()
    assert [entry["path"] for entry in listed["files"]] == ["ok.txt"]
    assert listed["omitted"] == [{"path": "xy", "size": 0, "why": ""}]

    bomb = hostile_tar(tmp_path / "bomb.tar", [(member("files/a", comment="x" * (2 << 20)), b"a")])
    with pytest.raises(store.Unreadable, match="extended header"):
        await store.store(pool, job, bomb)
    many = hostile_tar(
        tmp_path / "many.tar",
        [(member(f"d{n}", tarfile.DIRTYPE), b"") for n in range(store.MAX_MEMBERS + 1)],
    )
    with pytest.raises(store.Unreadable, match="members"):
        await store.store(pool, job, many)
    listed = (await client.get(f"/jobs/{job.job_id}/artifacts")).json()
    assert [entry["path"] for entry in listed["files"]] == ["ok.txt"]  # rolled back
