"""Storing a run's artifacts: the worker's tar (spooled to a file by the runner) read
member by member into PostgreSQL (rows of tower/db/chunks.py, written by COPY), in one
transaction fenced by the lease.

The tar came out of the job's container, so it is checked like anything from there:
the manifest first and bounded, then the diff, then files/<path> at relative paths
without `..`, regular files only, at most MAX_ARTIFACT_FILES of them. Sizes and
digests are tower's own measure of what it stored, not the worker's word.
"""

from __future__ import annotations

import asyncio
import json
import posixpath
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

from tower.artifacts import queries
from tower.db import chunks
from tower.db.pool import Pool, transaction
from tower.execution import protocol


class Unreadable(Exception):
    """The artifacts tar is not what the worker sends."""


@dataclass(frozen=True)
class Attempt:
    """The attempt storing its artifacts: its lease token fences the write."""

    job_id: str
    lease_token: UUID
    attempt: int


async def store(pool: Pool, attempt: Attempt, tar_path: Path | None) -> bool:
    """Replace the job's artifacts with those in `tar_path` (None: the attempt left
    none); False when the lease is gone (nothing is kept). Raises Unreadable for a
    tar that is not the worker's, and the database's errors."""
    try:
        async with transaction(pool) as connection:
            await connection.execute(queries.DELETE_OF_JOB, attempt.job_id)
            summary = None
            if tar_path is not None:
                summary = await _store_tar(connection, attempt, tar_path)
            fenced = queries.SET_SUMMARY
            if await connection.fetchval(fenced, attempt.job_id, attempt.lease_token, summary):
                return True
            raise _LeaseGone
    except _LeaseGone:
        return False


class _LeaseGone(Exception):
    """Raised to roll the transaction back."""


async def _store_tar(connection: Any, attempt: Attempt, tar_path: Path) -> dict[str, Any]:
    await asyncio.to_thread(check_headers, tar_path)
    archive = await asyncio.to_thread(tarfile.open, tar_path, "r:")
    try:
        members = iter(archive)
        first = await asyncio.to_thread(next, members, None)
        manifest = await asyncio.to_thread(_manifest, archive, first)
        stored = Stored()
        while (member := await asyncio.to_thread(next, members, None)) is not None:
            await _store_member(connection, attempt, archive, member, stored)
    finally:
        archive.close()
    return summary(manifest, stored)


@dataclass
class Stored:
    files: int = 0
    bytes: int = 0
    diff_size: int | None = None
    session: bool = False
    seen: set[str] = field(default_factory=set)


async def _store_member(
    connection: Any,
    attempt: Attempt,
    archive: tarfile.TarFile,
    member: tarfile.TarInfo,
    stored: Stored,
) -> None:
    seen = stored.seen
    if member.name == protocol.ARTIFACTS_SESSION and member.isfile() and not stored.session:
        # A turn's captured state (docs/sessions.md): kept for a continue, not listed.
        stored.session = True
        await _store_file(connection, attempt, archive, member, "session", "")
        return
    if member.name == protocol.ARTIFACTS_DIFF and member.isfile() and stored.diff_size is None:
        stored.diff_size = await _store_file(connection, attempt, archive, member, "diff", "")
        return
    path = artifact_path(member.name)
    if path is None or not member.isfile() or path in seen:
        return
    if stored.files >= protocol.MAX_ARTIFACT_FILES:
        return
    seen.add(path)
    stored.bytes += await _store_file(connection, attempt, archive, member, "file", path)
    stored.files += 1


# Members a worker's tar may hold: the manifest, the diff, the files, and the extended
# header (PAX) before each; a tar of more is not the worker's.
MAX_MEMBERS = 2 * (protocol.MAX_ARTIFACT_FILES + 3)
# The largest extended header (PAX, GNU long name) tarfile is allowed to read: it reads
# one whole into memory, so the frame's size alone would not bound it.
MAX_EXTENDED_HEADER = 1 << 20
EXTENDED_TYPES = (
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
)


def check_headers(tar_path: Path) -> None:
    """Walk the tar's headers (seeking past the data) before tarfile reads it: at most
    MAX_MEMBERS headers, no extended header over MAX_EXTENDED_HEADER. Raises Unreadable."""
    with tar_path.open("rb") as file:
        for _ in range(MAX_MEMBERS + 1):
            block = file.read(tarfile.BLOCKSIZE)
            if len(block) < tarfile.BLOCKSIZE or block == bytes(tarfile.BLOCKSIZE):
                return
            size = _header_size(block[124:136])
            if block[156:157] in EXTENDED_TYPES and size > MAX_EXTENDED_HEADER:
                raise Unreadable(f"the artifacts tar has a {size} byte extended header")
            file.seek(-(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE, 1)
    raise Unreadable(f"the artifacts tar holds more than {MAX_MEMBERS} members")


def _header_size(field: bytes) -> int:
    """A header's size field: octal digits, or base-256 (GNU) for a large size."""
    if field[:1] == b"\x80":
        return int.from_bytes(field[1:], "big")
    try:
        return int(field.split(b"\x00", 1)[0].strip(b" ") or b"0", 8)
    except ValueError:
        raise Unreadable("the artifacts tar has a header it cannot read") from None


def artifact_path(name: str) -> str | None:
    """The workspace path of a files/<path> member, or None when it is not one that
    stays inside the workspace."""
    head, _, path = name.partition("/")
    if head != protocol.ARTIFACT_FILES_DIR:
        return None
    return clean_path(path)


def clean_path(path: str) -> str | None:
    """`path` when it is a plain relative path (no `..`, `.`, empty part, NUL), or None."""
    if not path or "\x00" in path or path.startswith("/") or "\\" in path:
        return None
    if len(path.encode("utf-8", "surrogateescape")) > protocol.MAX_ARTIFACT_PATH:
        return None
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts) or posixpath.normpath(path) != path:
        return None
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return path


async def _store_file(
    connection: Any,
    attempt: Attempt,
    archive: tarfile.TarFile,
    member: tarfile.TarInfo,
    kind: str,
    path: str,
) -> int:
    """Insert one artifact and its chunks; its size as stored."""
    reader = archive.extractfile(member)
    assert reader is not None  # a regular file always has content, if empty
    artifact_id = await connection.fetchval(
        queries.INSERT_ARTIFACT, attempt.job_id, kind, path, member.mode & 0o777, attempt.attempt
    )
    written = await chunks.copy_in(connection, queries.CHUNKS, artifact_id, reader.read)
    await connection.execute(queries.MEASURED, artifact_id, written.size, written.sha256)
    return written.size


def _manifest(archive: tarfile.TarFile, member: tarfile.TarInfo | None) -> dict[str, Any]:
    if (
        member is None
        or member.name != protocol.ARTIFACTS_MANIFEST
        or not member.isfile()
        or member.size > protocol.MAX_ARTIFACTS_MANIFEST
    ):
        raise Unreadable("the artifacts tar does not start with its manifest")
    reader = archive.extractfile(member)
    assert reader is not None
    try:
        document = json.loads(reader.read(member.size))
    except ValueError as error:
        raise Unreadable(f"the artifacts manifest is not JSON: {error}") from None
    if not isinstance(document, dict):
        raise Unreadable("the artifacts manifest is not an object")
    return document


def summary(manifest: dict[str, Any], stored: Stored) -> dict[str, Any]:
    """The job's summary (jobs.artifacts), from the worker's manifest, kept to the
    shapes and bounds the API states, and what tower stored."""
    omitted = [
        {
            "path": _text(one.get("path")),
            "size": _count(one.get("size")),
            "why": _text(one.get("why")),
        }
        for one in _listed(manifest.get("omitted"))
        if isinstance(one, dict)
    ]
    deleted = [_text(path) for path in _listed(manifest.get("deleted"))]
    return {
        "files": stored.files,
        "bytes": stored.bytes,
        "omitted": omitted,
        "omitted_count": max(_count(manifest.get("omitted_count")), len(omitted)),
        "deleted": deleted,
        "deleted_count": max(_count(manifest.get("deleted_count")), len(deleted)),
        "changes": _changes(manifest.get("changes")),
        "diff_size": stored.diff_size,
        "diff_error": _text(manifest["diff_error"]) if manifest.get("diff_error") else None,
    }


def _listed(value: Any) -> list[Any]:
    return value[: protocol.MAX_ARTIFACT_LISTED] if isinstance(value, list) else []


def _text(value: Any) -> str:
    # PostgreSQL's jsonb holds no NUL; a path is at most MAX_ARTIFACT_PATH.
    text = value if isinstance(value, str) else ""
    return text.replace("\x00", "")[: protocol.MAX_ARTIFACT_PATH]


def _count(value: Any) -> int:
    return value if isinstance(value, int) and 0 <= value < 2**53 else 0


def _changes(value: Any) -> dict[str, int] | None:
    if not isinstance(value, dict):
        return None
    return {name: _count(value.get(name)) for name in ("files", "insertions", "deletions")}
