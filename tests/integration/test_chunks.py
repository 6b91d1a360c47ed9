"""Files kept in PostgreSQL as rows (tower/db/chunks.py), against a real database: what
COPY wrote reads back whole and by any range, across batch edges and whatever sizes
the file's reads returned; rows written before (1 MiB each, TOASTed) read the same;
rows of CHUNK_BYTES stay in their heap pages (migration 0020: nothing goes to TOAST)."""

from __future__ import annotations

import hashlib
import io
import os
from typing import Any

import pytest

from tests.support.towers import insert_job
from tower.artifacts import queries
from tower.db import chunks
from tower.db.pool import Pool
from tower.uploads import queries as upload_queries

MiB = 1 << 20
NEW_ARTIFACT = """
INSERT INTO job_artifacts (job_id, kind, path, size, mode, sha256, attempt)
VALUES ($1, 'file', $2, 0, 420, '', 1) RETURNING artifact_id
"""
TOAST_BYTES = """
SELECT pg_relation_size(reltoastrelid) FROM pg_class WHERE relname = 'job_artifact_chunks'
"""


class Uneven(io.BytesIO):
    """A file whose reads return less than asked, by varying amounts."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.calls = 0

    def read(self, size: int | None = -1) -> bytes:
        self.calls += 1
        wanted = -1 if size is None or size < 0 else max(1, size - self.calls * 997 % size)
        return super().read(wanted)


async def artifact(db: Any, job_id: str, path: str) -> int:
    artifact_id: int = await db.fetchval(NEW_ARTIFACT, job_id, path)
    return artifact_id


async def read(pool: Pool, artifact_id: int, start: int, end: int) -> bytes:
    pieces = chunks.read_range(pool, queries.CHUNKS, artifact_id, start, end)
    return b"".join([piece async for piece in pieces])


RANGES = [
    (0, None),
    (1, 2),
    (chunks.CHUNK_BYTES - 1, chunks.CHUNK_BYTES + 1),
    (chunks.READ_BYTES - 5, chunks.READ_BYTES + 5),
    (3 * chunks.READ_BYTES + 17, None),
    (MiB - 3, MiB + 3),
]


async def test_copied_rows_read_back_whole_and_by_any_range(pool: Pool, db: Any) -> None:
    data = os.urandom(4 * chunks.READ_BYTES + 12345)
    job_id = await insert_job(db, "p")
    artifact_id = await artifact(db, job_id, "new.bin")
    toast_before = await db.fetchval(TOAST_BYTES)
    source = Uneven(data)

    async with db.transaction():
        written = await chunks.copy_in(db, queries.CHUNKS, artifact_id, source.read)

    assert (written.size, written.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert source.calls > 5  # short reads were carried over into whole rows
    sizes = await db.fetch(
        "SELECT octet_length(data) AS n FROM job_artifact_chunks WHERE artifact_id = $1"
        " ORDER BY seq",
        artifact_id,
    )
    assert {row["n"] for row in sizes[:-1]} == {chunks.CHUNK_BYTES}
    assert await db.fetchval(TOAST_BYTES) == toast_before  # every row in its page
    for start, end in RANGES:
        stop = len(data) if end is None else end
        assert await read(pool, artifact_id, start, stop) == data[start:stop], (start, end)


async def test_rows_of_a_mebibyte_written_before_read_the_same(pool: Pool, db: Any) -> None:
    data = os.urandom(3 * MiB + 100)
    job_id = await insert_job(db, "p")
    artifact_id = await artifact(db, job_id, "old.bin")
    for seq, at in enumerate(range(0, len(data), MiB)):
        await db.execute(
            "INSERT INTO job_artifact_chunks (artifact_id, seq, data) VALUES ($1, $2, $3)",
            artifact_id,
            seq,
            data[at : at + MiB],
        )
    for start, end in RANGES:
        stop = len(data) if end is None else end
        assert await read(pool, artifact_id, start, stop) == data[start:stop], (start, end)


@pytest.mark.parametrize(("start", "end"), [(0, 0), (5, 5)])
async def test_an_empty_range_or_file_reads_nothing(
    pool: Pool, db: Any, start: int, end: int
) -> None:
    job_id = await insert_job(db, "p")
    empty = await artifact(db, job_id, "empty")
    assert await read(pool, empty, start, end) == b""
    assert await read(pool, empty, 0, 10) == b""  # no rows at all


async def chunk_count(db: Any, table: str, column: str, key: object) -> int:
    count: int = await db.fetchval(f"SELECT count(*) FROM {table} WHERE {column} = $1", key)
    return count


async def test_chunks_go_with_their_artifact_and_their_job(db: Any) -> None:
    """No foreign key checks each row (migration 0021): a trigger on each DELETE of
    job_artifacts removes their chunks, also when a job's deletion cascades to them."""
    job_id = await insert_job(db, "p")
    replaced, kept = await artifact(db, job_id, "a"), await artifact(db, job_id, "b")
    other_job = await insert_job(db, "p")
    other = await artifact(db, other_job, "c")
    for artifact_id in (replaced, kept, other):
        async with db.transaction():
            await chunks.copy_in(db, queries.CHUNKS, artifact_id, io.BytesIO(b"x" * 20000).read)

    await db.execute("DELETE FROM job_artifacts WHERE artifact_id = $1", replaced)
    assert [
        await chunk_count(db, "job_artifact_chunks", "artifact_id", a) for a in (replaced, kept)
    ] == [0, 3]
    await db.execute("DELETE FROM jobs WHERE job_id = $1", job_id)
    assert await chunk_count(db, "job_artifact_chunks", "artifact_id", kept) == 0
    assert await chunk_count(db, "job_artifact_chunks", "artifact_id", other) == 3


async def test_chunks_go_with_their_upload(db: Any) -> None:
    for upload_id in ("up-gone", "up-kept"):
        await db.execute(
            "INSERT INTO uploads (upload_id, kind, size, sha256, entries, expires_at)"
            " VALUES ($1, 'file', 0, '', 1, now() + interval '1 hour')",
            upload_id,
        )
        async with db.transaction():
            await chunks.copy_in(db, upload_queries.CHUNKS, upload_id, io.BytesIO(b"y" * 9000).read)
    await db.execute("DELETE FROM uploads WHERE upload_id = 'up-gone'")
    counts = [
        await chunk_count(db, "upload_chunks", "upload_id", u) for u in ("up-gone", "up-kept")
    ]
    assert counts == [0, 2]
