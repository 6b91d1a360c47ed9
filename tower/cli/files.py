"""Sending a local file, archive or directory to POST /uploads, streamed from disk: what
`parpaing upload` and `parpaing submit --file` share."""

from __future__ import annotations

import tarfile
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

from tower.cli.output import CliError
from tower.cli.tower_client import TowerClient

ARCHIVE_TYPES = {
    ".tar": "application/x-tar",
    ".tar.gz": "application/gzip",
    ".tgz": "application/gzip",
    ".zip": "application/zip",
}


def upload_path(client: TowerClient, path: Path) -> dict[str, Any]:
    """Upload `path`; the upload's facts (upload_id, size, sha256, entries)."""
    if path.is_dir():
        with tempfile.TemporaryDirectory(prefix="parpaing-upload-") as scratch:
            archive = Path(scratch) / "upload.tar.gz"
            _tar_directory(path, archive)
            reply: dict[str, Any] = client.send_file("/uploads", archive, "application/gzip")
            return reply
    if not path.is_file():
        raise CliError(f"{path}: no such file or directory")
    content_type = _archive_type(path.name)
    if content_type is not None:
        return dict(client.send_file("/uploads", path, content_type))
    query = urllib.parse.urlencode({"filename": path.name})
    return dict(client.send_file(f"/uploads?{query}", path, "application/octet-stream"))


def _archive_type(name: str) -> str | None:
    lowered = name.lower()
    for suffix, content_type in ARCHIVE_TYPES.items():
        if lowered.endswith(suffix):
            return content_type
    return None


def _tar_directory(directory: Path, archive: Path) -> None:
    # Symbolic links travel as links (tower refuses those pointing out of the tree).
    with tarfile.open(archive, "w:gz") as tar:
        for entry in sorted(directory.iterdir()):
            tar.add(entry, arcname=entry.name)
