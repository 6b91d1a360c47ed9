"""A request body spooled to a private temporary file as it arrives: never held in
memory, measured and hashed on the way, refused the moment it passes its cap."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from tower.errors import PayloadTooLarge

WRITE_BATCH = 1 << 20


@dataclass(frozen=True)
class Spooled:
    path: Path
    size: int
    sha256: str


async def spool(body: AsyncIterator[bytes], limit: int) -> Spooled:
    """The body in a temporary file (0600) the caller must unlink."""
    descriptor, name = tempfile.mkstemp(prefix="parpaing-upload-")
    path = Path(name)
    try:
        with os.fdopen(descriptor, "wb") as file:
            size, digest = await _copy(body, file, limit)
    except BaseException:
        discard(path)
        raise
    return Spooled(path, size, digest)


def discard(path: Path) -> None:
    path.unlink(missing_ok=True)


async def capped_body(body: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    """The body's pieces, refused (413) the moment they pass `limit` bytes."""
    size = 0
    async for chunk in body:
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the upload is larger than MAX_UPLOAD_BYTES ({limit} bytes)")
        yield chunk


async def _copy(body: AsyncIterator[bytes], file: BinaryIO, limit: int) -> tuple[int, str]:
    digest = hashlib.sha256()
    pending = bytearray()
    size = 0
    async for chunk in capped_body(body, limit):
        size += len(chunk)
        pending += chunk
        if len(pending) >= WRITE_BATCH:
            await asyncio.to_thread(_write_hashed, file, digest, bytes(pending))
            pending.clear()
    await asyncio.to_thread(_write_hashed, file, digest, bytes(pending))
    return size, digest.hexdigest()


def _write_hashed(file: BinaryIO, digest: Any, batch: bytes) -> None:
    # In the writing thread: hashlib lets go of the GIL, so the event loop goes on
    # receiving (and serving) while a batch is hashed.
    digest.update(batch)
    file.write(batch)
