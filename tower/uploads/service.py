"""Receiving an upload: spool the body to disk (bounded), check what it would unpack,
then store it in PostgreSQL in one transaction, so a client that aborts mid-stream or
an archive that is refused leaves nothing behind, and any replica can serve it."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, BinaryIO

from tower.db.pool import Pool, transaction
from tower.errors import BadRequest, NotFound, UnsupportedMediaType
from tower.settings import Settings, memory_bytes
from tower.uploads import queries
from tower.uploads.archive import CONTENT_TYPES, UploadKind, check_archive, inside
from tower.uploads.schemas import UploadOut
from tower.uploads.spool import discard, spool

CHUNK_BYTES = 1 << 20
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


async def _store_chunks(connection: Any, upload_id: str, path: Path) -> None:
    with path.open("rb") as file:
        seq = 0
        while chunk := await asyncio.to_thread(_read, file):
            await connection.execute(queries.INSERT_CHUNK, upload_id, seq, chunk)
            seq += 1


def _read(file: BinaryIO) -> bytes:
    return file.read(CHUNK_BYTES)


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
    """Write the upload's bytes to `file`, a chunk at a time (one in memory at once);
    the number written. Reads expired uploads too: a live job's inputs outlive their
    expiry (see DELETE_EXPIRED). Stops at the first missing chunk (a deleted upload)."""
    written = 0
    seq = 0
    while True:
        async with pool.acquire() as connection:
            chunk = await connection.fetchval(queries.SELECT_CHUNK, upload_id, seq)
        if chunk is None:
            return written
        await asyncio.to_thread(file.write, chunk)
        written += len(chunk)
        seq += 1


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
