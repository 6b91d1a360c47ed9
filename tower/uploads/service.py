"""Receiving an upload: a single file straight into PostgreSQL as it arrives (a few at
once per replica, see STREAMED_AT_ONCE); otherwise spool the body to disk (bounded),
check what it would unpack, then store it. Either way in one transaction, so a client
that aborts mid-stream or an archive that is refused leaves nothing behind, and any
replica can serve it."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, BinaryIO

from tower.db import chunks
from tower.db.pool import Pool, transaction
from tower.errors import BadRequest, NotFound, UnsupportedMediaType
from tower.settings import Settings, memory_bytes
from tower.uploads import queries
from tower.uploads.archive import CONTENT_TYPES, UploadKind, check_archive, inside
from tower.uploads.schemas import UploadOut
from tower.uploads.spool import capped_body, discard, spool

UPLOAD_ID = re.compile(r"^up-[0-9a-f]{24}$")
FILENAME_MAX = 255


def upload_kind(content_type: str) -> UploadKind:
    kind = CONTENT_TYPES.get(content_type.split(";")[0].strip().lower())
    if kind is None:
        accepted = ", ".join(CONTENT_TYPES)
        raise UnsupportedMediaType(f"an upload's Content-Type must be one of: {accepted}")
    return kind


def checked_filename(kind: UploadKind, filename: str | None) -> str | None:
    """A single file needs the name it will have in the workspace; archives carry theirs."""
    if kind != "file":
        return None
    if not filename or len(filename) > FILENAME_MAX or "/" in filename:
        raise BadRequest("a single-file upload needs ?filename=NAME (no '/', at most 255 bytes)")
    return inside(filename)


async def create(
    pool: Pool,
    settings: Settings,
    body: AsyncIterator[bytes],
    kind: UploadKind,
    filename: str | None,
    tenant: str,
) -> UploadOut:
    """Store the body as an upload of the tenant: only its jobs and keys use it."""
    if kind == "file" and not STREAMING.locked():
        async with STREAMING:
            return _out(await _streamed(pool, settings, body, filename, tenant))
    spooled = await spool(body, settings.max_upload_bytes)
    try:
        expanded = memory_bytes(settings.worker_workspace_size) or 0
        entries = await asyncio.to_thread(check_archive, spooled.path, kind, expanded)
        upload = (f"up-{secrets.token_hex(12)}", kind, filename, spooled.size, spooled.sha256)
        async with transaction(pool) as connection:
            row = await connection.fetchrow(
                queries.INSERT_UPLOAD, *upload, entries, settings.upload_ttl_hours, tenant
            )
            await _store_chunks(connection, row["upload_id"], spooled.path)
    finally:
        discard(spooled.path)
    return _out(row)


# A single file (nothing to check before it is kept) goes into PostgreSQL as it arrives,
# in one transaction: a client that goes away leaves nothing. Each such upload holds a
# database connection for as long as its client sends, so a replica streams at most
# this many at once; the others (and archives, checked whole first) are spooled to disk
# before they hold one. Streaming saves the spool's pass: 100 MB went in 1.1 s, not 1.7 s.
STREAMED_AT_ONCE = 2
STREAMING = asyncio.Semaphore(STREAMED_AT_ONCE)


async def _streamed(
    pool: Pool, settings: Settings, body: AsyncIterator[bytes], filename: str | None, tenant: str
) -> Any:
    upload_id = f"up-{secrets.token_hex(12)}"
    capped = capped_body(body, settings.max_upload_bytes)
    async with transaction(pool) as connection:
        await connection.execute(
            queries.INSERT_UPLOAD, upload_id, "file", filename, 0, "", 1,
            settings.upload_ttl_hours, tenant,
        )  # fmt: skip
        written = await chunks.copy_in_stream(connection, queries.CHUNKS, upload_id, capped)
        return await connection.fetchrow(queries.MEASURED, upload_id, written.size, written.sha256)


async def _store_chunks(connection: Any, upload_id: str, path: Path) -> None:
    with path.open("rb") as file:
        await chunks.copy_in(connection, queries.CHUNKS, upload_id, file.read)


async def get(pool: Pool, upload_id: str, sees: str | None) -> UploadOut:
    async with pool.acquire() as connection:
        row = await connection.fetchrow(queries.SELECT_ONE, _checked(upload_id), sees)
    if row is None:
        raise _missing(upload_id)
    return _out(row)


async def live_sizes(pool: Pool, upload_ids: list[str], tenant: str) -> dict[str, int]:
    """The size of each of `upload_ids` a new job of `tenant` may use (the tenant's,
    present, not expired)."""
    async with pool.acquire() as connection:
        rows = await connection.fetch(queries.SELECT_LIVE_SIZES, upload_ids, tenant)
    return {row["upload_id"]: row["size"] for row in rows}


async def write_to(pool: Pool, upload_id: str, file: BinaryIO) -> int:
    """Write the upload's bytes to `file`, a batch of rows at a time (never the whole
    upload in memory); the number written. Reads expired uploads too: a live job's
    inputs outlive their expiry (see DELETE_EXPIRED). Stops where its rows end (a
    deleted upload has none)."""
    written = 0
    async for batch in chunks.batches_from(pool, queries.CHUNKS, upload_id, 0):
        await asyncio.to_thread(file.writelines, batch)
        written += sum(len(row) for row in batch)
    return written


async def delete(pool: Pool, upload_id: str, sees: str | None) -> None:
    async with pool.acquire() as connection:
        if await connection.fetchval(queries.DELETE, _checked(upload_id), sees) is None:
            raise _missing(upload_id)


async def delete_expired(connection: Any) -> int:
    """Retention's share: uploads past UPLOAD_TTL_HOURS, with their chunks."""
    status = await connection.execute(queries.DELETE_EXPIRED)
    return int(status.split()[-1])


def _checked(upload_id: str) -> str:
    if not UPLOAD_ID.match(upload_id):
        raise _missing(upload_id)
    return upload_id


def _missing(upload_id: str) -> NotFound:
    return NotFound(f"upload {upload_id[:80]!r} not found (or expired)")


def _out(row: Any) -> UploadOut:
    return UploadOut(**dict(row))
