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
