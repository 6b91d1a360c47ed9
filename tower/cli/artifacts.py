"""`parpaing artifacts JOB [--out DIR]`: what a job created or changed in its workspace,
listed, or downloaded (GET /jobs/{id}/artifacts.tar.gz) and unpacked into DIR; and
`parpaing diff JOB`: a repository job's changes as a patch on stdout."""

from __future__ import annotations

import argparse
import os
import posixpath
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from tower.cli.client import against_tower, quoted, tower_options
from tower.cli.output import CliError
from tower.cli.tower_client import TowerClient


def add_commands(commands: Any) -> None:
    common = tower_options()
    parser = commands.add_parser(
        "artifacts",
        parents=[common],
        help="list a job's artifacts, or download them into --out DIR",
    )
    parser.add_argument("job_id")
    parser.add_argument("--out", type=Path, help="unpack every artifact into this directory")
    parser.set_defaults(handler=against_tower(artifacts))
    parser = commands.add_parser(
        "diff", parents=[common], help="print a repository job's changes as a git patch"
    )
    parser.add_argument("job_id")
    parser.set_defaults(handler=against_tower(diff))


def artifacts(args: argparse.Namespace, client: TowerClient) -> int:
    if args.out is None:
        return _list(client.call("GET", f"/jobs/{quoted(args.job_id)}/artifacts"))
    with tempfile.TemporaryFile(prefix="parpaing-artifacts-") as archive:
        client.download(f"/jobs/{quoted(args.job_id)}/artifacts.tar.gz", archive)
        archive.seek(0)
        count = unpack(archive, args.out)
    print(f"{count} file(s) in {args.out}")
    return 0


def diff(args: argparse.Namespace, client: TowerClient) -> int:
    client.download(f"/jobs/{quoted(args.job_id)}/diff", sys.stdout.buffer)
    sys.stdout.buffer.flush()
    return 0


def _list(reply: dict[str, Any]) -> int:
    for entry in reply["files"]:
        print(f"{entry['size']:>12}  {entry['path']}")
    for entry in reply["omitted"]:
        print(f"{'omitted':>12}  {entry['path']} ({entry['size']} bytes): {entry['why']}")
    for path in reply["deleted"]:
        print(f"{'deleted':>12}  {path}")
    changes = reply.get("changes")
    if changes:
        print(
            f"changes: {changes['files']} file(s), +{changes['insertions']} -{changes['deletions']}"
        )
    return 0


def unpack(archive: Any, out: Path) -> int:
    """Unpack a tar.gz of artifacts into `out`: regular files only, at relative paths
    without `..`, never written through a link (whatever `out` already holds)."""
    out.mkdir(parents=True, exist_ok=True)
    root = os.path.realpath(out)
    count = 0
    try:
        with tarfile.open(fileobj=archive, mode="r|gz") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                target = _target(root, member.name)
                source = tar.extractfile(member)
                assert source is not None
                _write(target, root, source, member.mode)
                count += 1
    except (tarfile.TarError, OSError) as error:
        raise CliError(f"unpacking the artifacts into {out}: {error}") from None
    return count


def _target(root: str, name: str) -> Path:
    normal = posixpath.normpath(name)
    if name.startswith("/") or normal == ".." or normal.startswith("../") or "\x00" in name:
        raise CliError(f"the artifacts hold {name[:200]!r}, outside the directory; stopped")
    return Path(root, normal)


def _write(target: Path, root: str, source: Any, mode: int) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    parent = os.path.realpath(target.parent)
    if parent != root and not parent.startswith(root + os.sep):
        raise CliError(f"{target} leads outside {root} (through a link); stopped")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
    with open(os.open(target, flags, 0o600), "wb") as writer:
        shutil.copyfileobj(source, writer, 1 << 20)
        os.fchmod(writer.fileno(), (mode & 0o755) | 0o600)
