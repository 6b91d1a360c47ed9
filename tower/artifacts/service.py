"""Reading a job's artifacts back: the list, one file (a byte range of it), all files as
a tar.gz, the diff. Bytes stream from PostgreSQL a batch of rows at a time (one
connection per batch, never the whole file in memory; tower/db/chunks.py), so any
replica serves any job's artifacts."""

from __future__ import annotations

import re
import tarfile
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from tower.artifacts import queries
from tower.artifacts.schemas import ArtifactList
from tower.artifacts.store import clean_path
from tower.db import chunks
from tower.db.ids import JOB_ID
from tower.db.pool import Pool
from tower.errors import NotFound

RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
GZIP_LEVEL = 6


@dataclass(frozen=True)
class Found:
    artifact_id: int
    path: str
    size: int
    mode: int
    sha256: str


class Unsatisfiable(Exception):
    """A Range no byte of the file satisfies (416)."""


async def listing(pool: Pool, job_id: str, sees: str | None) -> ArtifactList:
    async with pool.acquire() as connection:
        summary = await _summary(connection, job_id, sees)
        rows = await connection.fetch(queries.SELECT_FILES, job_id)
    return ArtifactList.model_validate(
        {
            "omitted": [],
            "omitted_count": 0,
            "deleted": [],
            "deleted_count": 0,
            "changes": None,
            "diff_size": None,
            "diff_error": None,
        }
        | summary
        | {"job_id": job_id, "files": [dict(row) for row in rows]}
    )


async def find(pool: Pool, job_id: str, path: str, sees: str | None) -> Found:
    """The job's artifact at `path`; 404 for an unknown job, path, or one with `..`."""
    async with pool.acquire() as connection:
        await _summary(connection, job_id, sees)
        clean = clean_path(path)
        row = None
        if clean is not None:
            row = await connection.fetchrow(queries.SELECT_ONE, job_id, "file", clean)
    if row is None:
        raise NotFound(f"job {job_id} has no artifact {path[:200]!r}")
    return Found(**dict(row))


async def diff(pool: Pool, job_id: str, sees: str | None) -> Found:
    async with pool.acquire() as connection:
        await _summary(connection, job_id, sees)
        row = await connection.fetchrow(queries.SELECT_ONE, job_id, "diff", "")
    if row is None:
        raise NotFound(f"job {job_id} has no diff (not a repository job, or none was kept)")
    return Found(**dict(row))


async def files(pool: Pool, job_id: str, sees: str | None) -> list[Found]:
    async with pool.acquire() as connection:
        await _summary(connection, job_id, sees)
        rows = await connection.fetch(queries.SELECT_ALL_FILES, job_id)
    return [Found(**dict(row)) for row in rows]


async def _summary(connection: Any, job_id: str, sees: str | None) -> dict[str, Any]:
    """The job's artifacts summary; 404 when it does not exist, or is not the tenant
    `sees`'s (None: any tenant's)."""
    row = None
    if JOB_ID.match(job_id):
        row = await connection.fetchrow(queries.SELECT_SUMMARY, job_id, sees)
    if row is None:
        raise NotFound(f"job {job_id[:80]!r} not found")
    summary = row["artifacts"]
    return summary if isinstance(summary, dict) else {}


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The [start, end) a Range header asks of `size` bytes; None to send it all (no
    header, or one this does not serve: several ranges, another unit). Raises
    Unsatisfiable when no byte of the file is in it."""
    match = RANGE.match(header.strip()) if header else None
    if match is None or match.group() == "bytes=-":
        return None
    first, last = match.groups()
    if not first:  # the last N bytes
        start, end = max(size - int(last), 0), size
        if int(last) == 0:
            raise Unsatisfiable
    else:
        start = int(first)
        end = min(int(last) + 1, size) if last else size
        if last and int(last) < start:
            return None  # not a valid range: ignored (RFC 9110)
    if start >= size:
        raise Unsatisfiable
    return start, end


async def read(pool: Pool, artifact_id: int, start: int, end: int) -> AsyncIterator[bytes]:
    """Bytes [start, end) of an artifact, about a batch of rows at a time."""
    async for piece in chunks.read_range(pool, queries.CHUNKS, artifact_id, start, end):
        yield piece


async def tar_gz(pool: Pool, found: list[Found]) -> AsyncIterator[bytes]:
    """Every artifact as one gzipped tar, compressed as it streams."""
    gzip = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    written = 0
    for artifact in found:
        header = _header(artifact)
        yield gzip.compress(header)
        async for piece in read(pool, artifact.artifact_id, 0, artifact.size):
            yield gzip.compress(piece)
        yield gzip.compress(bytes(-artifact.size % tarfile.BLOCKSIZE))
        written += len(header) + artifact.size + (-artifact.size % tarfile.BLOCKSIZE)
    end = 2 * tarfile.BLOCKSIZE
    end += -(written + end) % tarfile.RECORDSIZE
    yield gzip.compress(bytes(end)) + gzip.flush()


def _header(artifact: Found) -> bytes:
    info = tarfile.TarInfo(artifact.path)
    info.size, info.mode = artifact.size, artifact.mode & 0o777
    return info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape")
