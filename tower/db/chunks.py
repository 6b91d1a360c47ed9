"""A file's bytes kept in PostgreSQL as rows of CHUNK_BYTES, in order (upload_chunks,
job_artifact_chunks): written with COPY as they are read, read back a batch of rows
per statement, one connection per batch, never the whole file in memory.

Why 8000 bytes: with the tables' toast_tuple_target at 8160 (migration 0020) a row of
it stays in its heap page, uncompressed. A 1 MiB value was cut by TOAST into some 525
rows of 2 KB with as many index entries, and 100 MB took 1.35-1.44 s to write on the
2-core development machine, against 0.74-0.76 s as rows of 8000 bytes (reads: about the
same). Rows written before (1 MiB each, TOASTed) read the same way: every row but a
file's last has its file's chunk size, which a range read takes from the first row.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from tower.db.pool import Pool

CHUNK_BYTES = 8000
# Rows per read statement (about 1 MiB); a file is read from disk this many rows at once.
BATCH_ROWS = 131
READ_BYTES = CHUNK_BYTES * BATCH_ROWS


@dataclass(frozen=True)
class ChunkTable:
    """Where one kind of file keeps its rows: a table keyed by (key, seq, data), the
    statement reading BATCH_ROWS of them from a seq on ($1 key, $2 seq, $3 limit), and
    the one giving the size of a file's first row ($1 key)."""

    table: str
    columns: tuple[str, str, str]
    select_from: str
    first_size: str


@dataclass(frozen=True)
class Written:
    size: int
    sha256: str


async def copy_in(
    connection: Any, chunks: ChunkTable, key: object, read: Callable[[int], bytes]
) -> Written:
    """Every byte `read` gives (until it gives b""), as rows of `key` from seq 0, in the
    caller's transaction; their size and SHA-256, measured on the way. `read` is a
    blocking file read: it runs in a thread, hashing too."""
    digest = hashlib.sha256()

    async def blocks() -> AsyncIterator[bytes]:
        while block := await asyncio.to_thread(_read_hashed, read, digest):
            yield block

    return await _copy(connection, chunks, key, blocks(), digest)


async def copy_in_stream(
    connection: Any, chunks: ChunkTable, key: object, pieces: AsyncIterator[bytes]
) -> Written:
    """As copy_in, from pieces that arrive (a request's body), hashed a block at a time
    in a thread; an error the pieces raise (the client went away) aborts the COPY."""
    digest = hashlib.sha256()

    async def blocks() -> AsyncIterator[bytes]:
        pending = bytearray()
        async for piece in pieces:
            pending += piece
            if len(pending) >= READ_BYTES:
                block = bytes(pending)
                pending.clear()
                await asyncio.to_thread(digest.update, block)
                yield block
        if pending:
            await asyncio.to_thread(digest.update, bytes(pending))
            yield bytes(pending)

    return await _copy(connection, chunks, key, blocks(), digest)


async def _copy(
    connection: Any, chunks: ChunkTable, key: object, blocks: AsyncIterator[bytes], digest: Any
) -> Written:
    counted = [0]

    async def records() -> AsyncIterator[tuple[object, int, bytes]]:
        seq = 0
        async for row in _rows(blocks, counted):
            yield key, seq, row
            seq += 1

    await connection.copy_records_to_table(
        chunks.table, columns=list(chunks.columns), records=records()
    )
    return Written(counted[0], digest.hexdigest())


async def _rows(blocks: AsyncIterator[bytes], counted: list[int]) -> AsyncIterator[bytes]:
    """The bytes as rows of CHUNK_BYTES (the last one shorter), whatever sizes the blocks
    have: a remainder is carried over, so every row but the last is whole."""
    held = b""
    async for block in blocks:
        counted[0] += len(block)
        held += block
        whole = len(held) - len(held) % CHUNK_BYTES
        for at in range(0, whole, CHUNK_BYTES):
            yield held[at : at + CHUNK_BYTES]
        held = held[whole:]
    if held:
        yield held


def _read_hashed(read: Callable[[int], bytes], digest: Any) -> bytes:
    block = read(READ_BYTES)
    digest.update(block)  # hashlib lets go of the GIL: the event loop runs meanwhile
    return block


async def read_range(
    pool: Pool, chunks: ChunkTable, key: object, start: int, end: int
) -> AsyncIterator[bytes]:
    """Bytes [start, end) of a file, in pieces of about a batch; ends early when its rows
    are gone (deleted, or replaced, while it was read)."""
    if end <= start:
        return
    async with pool.acquire() as connection:
        size = await connection.fetchval(chunks.first_size, key)
    if not size:
        return
    seq, skip = divmod(start, size)
    left = end - start
    async with contextlib.aclosing(batches_from(pool, chunks, key, seq)) as batches:
        async for batch in batches:
            piece = b"".join(batch)[skip : skip + left]
            left -= len(piece)
            skip = 0
            yield piece
            if left <= 0:
                return


async def batches_from(
    pool: Pool, chunks: ChunkTable, key: object, seq: int
) -> AsyncGenerator[list[bytes], None]:
    """A file's rows from `seq` on, in order, BATCH_ROWS per statement (and per list).
    The next batch is read while the caller uses this one (one statement at a time)."""

    async def fetch(start: int) -> list[Any]:
        async with pool.acquire() as connection:
            rows: list[Any] = await connection.fetch(chunks.select_from, key, start, BATCH_ROWS)
        return rows

    pending: asyncio.Task[list[Any]] | None = asyncio.ensure_future(fetch(seq))
    try:
        while pending is not None:
            rows = await pending
            pending = None
            if len(rows) == BATCH_ROWS:
                seq += len(rows)
                pending = asyncio.ensure_future(fetch(seq))
            if rows:
                yield [row["data"] for row in rows]
    finally:
        if pending is not None:  # the caller stopped early: the read ahead is not needed
            pending.cancel()
            pending.add_done_callback(_retrieved)


def _retrieved(task: asyncio.Task[list[Any]]) -> None:
    """Marks a dropped read's outcome as seen: neither its cancellation nor an error of
    a read nobody wanted is worth a warning."""
    if not task.cancelled():
        task.exception()
