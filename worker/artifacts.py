"""What a job left in /workspace, sent back to tower as the artifacts frame.

Contract: docs/execution.md ("Artifacts"); the frame, the tar's names and the bounds are
protocol.py's. Standard library only (the image's python3, 3.11).

Before anything runs (right after the inputs are unpacked) the worker takes a snapshot
of the workspace: each path's type and mode, size and mtime_ns (`.git` directories
skipped). After the engine and the post-hook, a second snapshot: regular files that
are new or whose entry differs are the artifacts; paths gone are deleted; new or
changed links, pipes and devices are listed as omitted, never followed. For a
repository job (spec.json's workspace_commit), `git add -A` then `git diff --cached
--binary <commit>` is the diff, with `--numstat`'s totals as its changes.

The tar is streamed from disk, its exact size computed first: the manifest, the diff,
then files/<path>, each read through O_NOFOLLOW. Files past the artifact limit are
left out and listed as omitted, never cut.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

try:
    import protocol  # in the worker image: beside this file
except ModuleNotFoundError:  # run from a checkout: the same file, in tower's package
    from tower.execution import protocol

CHUNK = 1 << 20
GIT_TIMEOUT = 300.0
# What git must not run or read on the agent's behalf while it measures the changes.
GIT_OPTIONS = (
    "-c", "core.hooksPath=/dev/null",
    "-c", "core.fsmonitor=false",
    "-c", "diff.external=",
    "-c", "core.quotePath=false",
)  # fmt: skip

# path -> (st_mode, size, mtime_ns): what decides whether a path changed.
Snapshot = dict[str, tuple[int, int, int]]


def snapshot(workspace: Path) -> Snapshot:
    """Every entry under `workspace` but directories, by relative path; links are not
    followed and `.git` directories are not entered."""
    found: Snapshot = {}
    pending = [workspace]
    while pending:
        directory = pending.pop()
        with contextlib.suppress(OSError), os.scandir(directory) as entries:
            for entry in entries:
                with contextlib.suppress(OSError):
                    _record(entry, workspace, found, pending)
    return found


def _record(entry: os.DirEntry[str], workspace: Path, found: Snapshot, pending: list[Path]) -> None:
    status = entry.stat(follow_symlinks=False)
    if stat.S_ISDIR(status.st_mode):
        if entry.name != ".git":
            pending.append(Path(entry.path))
        return
    path = os.path.relpath(entry.path, workspace)
    found[path] = (status.st_mode, status.st_size, status.st_mtime_ns)


@dataclass
class Diff:
    """A repository job's diff: the patch's file (or why there is none) and its totals."""

    path: Path | None
    size: int = 0
    changes: dict[str, int] | None = None
    error: str | None = None


def git_diff(workspace: Path, commit: str, patch: Path, env: dict[str, str]) -> Diff:
    """Stage everything (new files included) and diff the index against `commit`:
    a binary-safe patch that `git apply` takes on a fresh clone of that commit."""
    git = ["git", *GIT_OPTIONS]
    diff = ["diff", "--cached", "--no-ext-diff", "--no-textconv", commit, "--"]
    try:
        _git([*git, "add", "-A"], workspace, env)
        numstat = _git([*git, diff[0], "--numstat", *diff[1:]], workspace, env)
        patch.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(patch, "wb") as file:
            _git([*git, diff[0], "--binary", *diff[1:]], workspace, env, file)
    except (OSError, subprocess.SubprocessError, ValueError) as error:
        return Diff(None, error=f"git diff against {commit[:40]}: {str(error)[:500]}")
    return Diff(patch, patch.stat().st_size, _totals(numstat))


def _git(argv: list[str], cwd: Path, env: dict[str, str], out: BinaryIO | None = None) -> bytes:
    done = subprocess.run(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=out or subprocess.PIPE,
        stderr=subprocess.PIPE,
        timeout=GIT_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        raise ValueError(done.stderr.decode("utf-8", "replace").strip()[-500:])
    return done.stdout or b""


def _totals(numstat: bytes) -> dict[str, int]:
    """`--numstat` lines are `insertions<TAB>deletions<TAB>path`, `-` for a binary file."""
    files = insertions = deletions = 0
    for line in numstat.splitlines():
        added, removed, *_ = line.split(b"\t")
        files += 1
        insertions += int(added) if added.isdigit() else 0
        deletions += int(removed) if removed.isdigit() else 0
    return {"files": files, "insertions": insertions, "deletions": deletions}


# --- choosing what goes ------------------------------------------------------------------


@dataclass
class Artifact:
    path: str
    size: int
    mode: int


@dataclass
class Collected:
    """What goes back: the artifacts, what was left out and why, what was deleted."""

    files: list[Artifact] = field(default_factory=list)
    omitted: list[dict[str, Any]] = field(default_factory=list)
    omitted_count: int = 0
    deleted: list[str] = field(default_factory=list)
    diff: Diff | None = None
    # The turn's captured session state (see capture_session), sent last.
    session: Path | None = None
    session_size: int = 0

    def used(self) -> int:
        """Bytes of the artifact limit the files and the diff take."""
        diff = self.diff.size if self.diff and self.diff.path else 0
        return diff + sum(artifact.size for artifact in self.files)

    def omit(self, path: str, size: int, why: str) -> None:
        self.omitted_count += 1
        if len(self.omitted) < protocol.MAX_ARTIFACT_LISTED:
            self.omitted.append(
                {"path": _printable(path)[: protocol.MAX_ARTIFACT_PATH], "size": size, "why": why}
            )

    def empty(self) -> bool:
        return not (self.files or self.omitted_count or self.deleted or self.diff or self.session)

    def manifest(self) -> bytes:
        diff = self.diff
        document = {
            "version": protocol.ARTIFACTS_VERSION,
            "files": [vars(artifact) for artifact in self.files],
            "omitted": self.omitted,
            "omitted_count": self.omitted_count,
            "deleted": [_printable(path) for path in self.deleted[: protocol.MAX_ARTIFACT_LISTED]],
            "deleted_count": len(self.deleted),
            "changes": diff.changes if diff else None,
            "diff": {"size": diff.size} if diff and diff.path else None,
            "diff_error": diff.error if diff else None,
        }
        return json.dumps(document, ensure_ascii=False).encode("utf-8")


def _printable(path: str) -> str:
    """A path as UTF-8 text: bytes that are not UTF-8 (a file name may hold any) read as
    U+FFFD, so the manifest is always valid JSON text."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def collect(workspace: Path, before: Snapshot, limit: int, diff: Diff | None) -> Collected:
    """The artifacts of a job whose workspace was `before` when it started, within
    `limit` bytes (the diff's included, counted first)."""
    after = snapshot(workspace)
    collected = Collected(deleted=sorted(set(before) - set(after)), diff=diff)
    room = limit
    if diff is not None and diff.path is not None:
        if diff.size > room:
            diff.error = f"the diff is {diff.size} bytes, over the artifact limit ({limit} bytes)"
            diff.path = None
        else:
            room -= diff.size
    for path in sorted(after):
        mode, size, _ = after[path]
        if before.get(path) == after[path]:
            continue
        why = _refusal(path, mode, size, room, len(collected.files))
        artifact = None if why else _measured(workspace / path, path)
        if artifact is None:
            collected.omit(path, size, why or "changed while it was read, or not a regular file")
            continue
        collected.files.append(artifact)
        room -= artifact.size
    return collected


def _refusal(path: str, mode: int, size: int, room: int, count: int) -> str | None:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if not stat.S_ISREG(mode):
        return "not a regular file"
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return "its path is not UTF-8"
    if len(path.encode("utf-8")) > protocol.MAX_ARTIFACT_PATH:
        return f"its path is longer than {protocol.MAX_ARTIFACT_PATH} bytes"
    if count >= protocol.MAX_ARTIFACT_FILES:
        return f"more than {protocol.MAX_ARTIFACT_FILES} files"
    if size > room:
        return "over the artifact limit (MAX_ARTIFACT_BYTES)"
    return None


def _measured(local: Path, path: str) -> Artifact | None:
    """The file's size and mode, opened through O_NOFOLLOW; None unless it is still a
    regular file. Not its digest: tower measures what it stores (tower/artifacts/store.py)
    and never read the worker's, which cost a 100 MB artifact a quarter of a second here."""
    try:
        with _open_regular(local) as (_, status):
            return Artifact(path, status.st_size, stat.S_IMODE(status.st_mode))
    except OSError:
        return None


@contextlib.contextmanager
def _open_regular(local: Path) -> Iterator[tuple[BinaryIO, os.stat_result]]:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
    with open(os.open(local, flags), "rb") as reader:
        status = os.fstat(reader.fileno())
        if not stat.S_ISREG(status.st_mode):
            raise OSError(f"{local} is not a regular file")
        yield reader, status


# --- the frame -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    header: bytes
    size: int
    source: bytes | Path


def members(collected: Collected, workspace: Path) -> list[Member]:
    manifest = collected.manifest()
    found = [
        Member(_header(protocol.ARTIFACTS_MANIFEST, len(manifest), 0o600), len(manifest), manifest)
    ]
    diff = collected.diff
    if diff is not None and diff.path is not None:
        found.append(
            Member(_header(protocol.ARTIFACTS_DIFF, diff.size, 0o600), diff.size, diff.path)
        )
    for artifact in collected.files:
        name = f"{protocol.ARTIFACT_FILES_DIR}/{artifact.path}"
        found.append(
            Member(
                _header(name, artifact.size, artifact.mode),
                artifact.size,
                workspace / artifact.path,
            )
        )
    if collected.session is not None:
        size = collected.session_size
        found.append(
            Member(_header(protocol.ARTIFACTS_SESSION, size, 0o600), size, collected.session)
        )
    return found


def tar_size(found: list[Member]) -> int:
    """The exact size of the tar `pieces` yields: headers, data padded to whole blocks,
    two end blocks, all padded to a whole record (as tarfile lays it out)."""
    size = sum(len(member.header) + _padded(member.size) for member in found)
    size += 2 * tarfile.BLOCKSIZE
    return -(-size // tarfile.RECORDSIZE) * tarfile.RECORDSIZE


def pieces(found: list[Member]) -> Iterator[bytes]:
    written = 0
    for member in found:
        yield member.header
        yield from _content(member)
        yield bytes(_padded(member.size) - member.size)
        written += len(member.header) + _padded(member.size)
    yield bytes(tar_size(found) - written)


def _content(member: Member) -> Iterator[bytes]:
    """Exactly member.size bytes: a file that shrank since it was measured reads as
    zeros past its end, one that grew is cut at its size (the frame's size holds)."""
    if isinstance(member.source, bytes):
        yield member.source
        return
    left = member.size
    try:
        with _open_regular(member.source) as (reader, _):
            while left and (chunk := reader.read(min(left, CHUNK))):
                left -= len(chunk)
                yield chunk
    except OSError:
        pass
    while left:
        zeros = min(left, CHUNK)
        left -= zeros
        yield bytes(zeros)


def _padded(size: int) -> int:
    return -(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


def _header(name: str, size: int, mode: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mode = size, mode & 0o777
    info.uid = info.gid = protocol.WORKER_UID
    return info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape")


def send(
    collected: Collected | None, workspace: Path, stdout: BinaryIO, volume: Path | None = None
) -> str | None:
    """The artifacts frame on `stdout`: size 0 when there is nothing (or no limit), so
    that a frame an engine printed earlier is never taken for the worker's. A tar of
    ARTIFACTS_FILE_MIN bytes or more goes to the file `volume` instead when it fits
    there, announced by its own header line. Returns a line for the job's log then."""
    if collected is None or collected.empty():
        stdout.write(protocol.artifacts_header(0))
        stdout.flush()
        return None
    found = members(collected, workspace)
    size = tar_size(found)
    if volume is not None and size >= protocol.ARTIFACTS_FILE_MIN and _left_in(volume, found):
        stdout.write(protocol.artifacts_file_header(size))
        stdout.flush()
        return f"parpaing: artifacts ({size} bytes) left in the bundle volume for tower to copy"
    stdout.write(protocol.artifacts_header(size))
    for piece in pieces(found):
        stdout.write(piece)
    stdout.flush()
    return None


# What must stay free, of the volume and of the container's memory, once the tar is
# written: a tmpfs page is memory, and the worker must not be OOM-killed for a copy.
VOLUME_HEADROOM = 64 * 1024 * 1024


def _left_in(target: Path, found: list[Member]) -> bool:
    """Whether the tar was written whole to `target`; nothing is left there when not
    (no room, or a write failed: the frame goes on stdout instead)."""
    size = tar_size(found)
    if min(_free_bytes(target.parent), _free_memory()) < size + VOLUME_HEADROOM:
        return False
    try:
        target.unlink(missing_ok=True)  # whatever the job left there, a link included
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        with open(os.open(target, flags, 0o600), "wb") as file:
            for piece in pieces(found):
                file.write(piece)
        if target.stat().st_size == size:
            return True
    except OSError:
        pass
    with contextlib.suppress(OSError):
        target.unlink(missing_ok=True)
    return False


def _free_bytes(directory: Path) -> int:
    try:
        status = os.statvfs(directory)
    except OSError:
        return 0
    return status.f_bavail * status.f_frsize


# The container's memory bound and use: cgroup v2's files, then v1's.
CGROUP_MEMORY = (
    ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
    ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
)


def _free_memory() -> int:
    """How much more the container may hold before its memory bound; 0 when unknown
    (then nothing is written to the volume)."""
    for limit_file, usage_file in CGROUP_MEMORY:
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        return (1 << 62) if limit == "max" else max(0, int(limit) - usage)
    return 0


# --- the session state ---------------------------------------------------------------------


def capture_session(
    workspace: Path, home: Path, state: list[str], target: Path, room: int
) -> tuple[Path | None, int, str | None]:
    """The final workspace (its .git included) and the engine's state paths under $HOME,
    as one tar at `target` (protocol.SESSION_WORKSPACE/..., SESSION_HOME/...), for a later
    turn to start from (docs/sessions.md). Links are kept as links, never followed;
    pipes and devices are left out. Returns (tar, size, None), or (None, 0, why) when it
    could not be made or is over `room`, the artifact limit the files left."""
    try:
        with tarfile.open(target, "w", format=tarfile.PAX_FORMAT) as tar:
            tar.add(workspace, arcname=protocol.SESSION_WORKSPACE)
            for path in state:
                if os.path.lexists(home / path):
                    tar.add(home / path, arcname=f"{protocol.SESSION_HOME}/{path}")
        size = target.stat().st_size
    except (OSError, tarfile.TarError) as error:
        target.unlink(missing_ok=True)
        return None, 0, f"the session state was not captured: {error}"
    if size > room:
        target.unlink(missing_ok=True)
        return None, 0, f"the session state is {size} bytes, over the artifact limit left ({room})"
    return target, size, None
