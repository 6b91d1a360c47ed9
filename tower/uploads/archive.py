"""What an uploaded archive would write, checked before it is kept: every entry must land
inside the workspace, links must point inside it, no devices, and the whole must expand
within its cap (a zip bomb is refused from its headers, before anything is unpacked)."""

from __future__ import annotations

import posixpath
import stat
import tarfile
import zipfile
from pathlib import Path
from typing import Literal

from tower.errors import Invalid

UploadKind = Literal["file", "tar", "tar.gz", "zip"]

# The types a client sends; anything else is not an upload (415 at the route).
CONTENT_TYPES: dict[str, UploadKind] = {
    "application/octet-stream": "file",
    "application/x-tar": "tar",
    "application/gzip": "tar.gz",
    "application/x-gzip": "tar.gz",
    "application/zip": "zip",
}
MAX_ENTRIES = 100_000


def check_archive(path: Path, kind: UploadKind, max_expanded: int) -> int:
    """The number of entries `path` would unpack; Invalid naming the first bad one."""
    if kind == "file":
        return 1
    if kind == "zip":
        return _check_zip(path, max_expanded)
    return _check_tar(path, "r:gz" if kind == "tar.gz" else "r:", max_expanded)


def _check_tar(path: Path, mode: Literal["r:", "r:gz"], max_expanded: int) -> int:
    budget = _Budget(max_expanded)
    try:
        with tarfile.open(path, mode) as archive:
            for member in archive:
                _check_tar_member(member)
                budget.add(member.name, member.size if member.isfile() else 0)
    except (tarfile.TarError, EOFError, OSError) as error:
        raise Invalid(f"the upload is not a readable tar archive: {error}", field="body") from None
    return budget.entries


def _check_tar_member(member: tarfile.TarInfo) -> None:
    name = inside(member.name)
    if member.ischr() or member.isblk() or member.isfifo():
        raise _bad(member.name, "is a device or a pipe")
    if member.issym():
        inside(posixpath.join(posixpath.dirname(name), member.linkname), member.name)
    elif member.islnk():
        inside(member.linkname, member.name)
    elif not (member.isfile() or member.isdir()):
        raise _bad(member.name, "is not a file, a directory or a link")


def _check_zip(path: Path, max_expanded: int) -> int:
    budget = _Budget(max_expanded)
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                _check_zip_member(archive, info)
                budget.add(info.filename, info.file_size)
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise Invalid(f"the upload is not a readable zip archive: {error}", field="body") from None
    return budget.entries


def _check_zip_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    name = inside(info.filename)
    # Unix mode bits, when the zip was made on Unix; many zips carry permissions only.
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        # A zip link's target is its (small) content.
        target = archive.read(info, pwd=None)[:4096].decode("utf-8", "replace")
        inside(posixpath.join(posixpath.dirname(name), target), info.filename)
    elif stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise _bad(info.filename, "is not a file, a directory or a link")


def inside(name: str, entry: str | None = None) -> str:
    """`name` normalised, when it stays inside the workspace; Invalid otherwise."""
    entry = entry or name
    if not name or "\x00" in name:
        raise _bad(entry, "has an empty or NUL-bearing path")
    if name.startswith("/"):
        raise _bad(entry, "is an absolute path" if entry == name else "points outside")
    normal = posixpath.normpath(name)
    if normal == ".." or normal.startswith("../"):
        raise _bad(entry, "climbs out with '..'" if entry == name else "points outside")
    return normal


class _Budget:
    def __init__(self, max_expanded: int) -> None:
        self.max_expanded = max_expanded
        self.expanded = 0
        self.entries = 0

    def add(self, name: str, size: int) -> None:
        self.entries += 1
        self.expanded += size
        if self.expanded > self.max_expanded:
            raise Invalid(
                f"the archive expands past {self.max_expanded} bytes (at {name!r})", field="body"
            )
        if self.entries > MAX_ENTRIES:
            raise Invalid(f"the archive has more than {MAX_ENTRIES} entries", field="body")


def _bad(entry: str, why: str) -> Invalid:
    return Invalid(f"archive entry {entry[:200]!r} {why}", field="body")
