"""The tar that carries a job into its worker, and the tar its results come back in.

Written on the worker container's stdin (docs/execution.md), framed as
`parpaing-bundle <size>`, a newline and <size> bytes of tar; the worker unpacks it
into its /bundle volume:
    job/spec.json     what to run (version 1)
    job/files/<n>     the files the worker places, byte for byte
    job/inputs/<n>    the job's staged uploads, which the worker unpacks into /workspace
Only directories and regular files at relative paths: the worker refuses anything else.
A job without inputs gets its bundle built in memory (`bundle_tar`: a prompt is small);
one with inputs gets a `StreamedBundle`, whose exact size is known before its first
byte (the frame header states it) and whose inputs are read from their files as sent.
The results come back as a tar of out/result.json, out/stdout and out/stderr: framed on
the worker's stdout, or copied with get_archive of /bundle/out when no frame arrived
(tower/execution/docker/archive.py, which stops at the output cap).
The frames, names and paths are tower/execution/protocol.py's.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tower.execution import protocol
from tower.execution.runner import WorkspaceInput
from tower.execution.spec import JobSpec

# How much of an input file is read (and sent) at once.
STREAM_CHUNK = 1 << 20


@dataclass(frozen=True)
class WorkerOutput:
    """What the worker left in /bundle/out. `result` is result.json, or None when the
    worker never finished writing it (killed, out of memory, crashed). `too_large` says
    why nothing was kept when the copy passed the output cap."""

    result: dict[str, Any] | None
    stdout: bytes
    stderr: str
    too_large: str | None = None


def spec_document(spec: JobSpec, inputs: Sequence[WorkspaceInput] = ()) -> dict[str, Any]:
    """job/spec.json: the spec as the worker reads it; file contents stay out of it."""
    document = {
        "version": protocol.SPEC_VERSION,
        "job_id": spec.job_id,
        "argv": list(spec.argv),
        "env": dict(spec.env),
        "cwd": spec.cwd,
        "stdin": spec.stdin,
        "prompt_file": spec.prompt_file,
        "files": [
            {"source": protocol.job_file(index), "path": file.path, "mode": file.mode}
            for index, file in enumerate(spec.files)
        ],
        "pre_hook": spec.pre_hook,
        "post_hook": spec.post_hook,
        "dry_run": spec.dry_run,
        "output_limit": spec.output_limit,
        "artifact_limit": spec.artifact_limit,
    }
    if spec.workspace_commit:
        document["workspace_commit"] = spec.workspace_commit
    if spec.session_state:
        document["session_state"] = list(spec.session_state)
    if inputs:
        document["inputs"] = [
            {
                "source": protocol.job_input(index),
                "path": staged.path,
                "kind": staged.kind,
                "filename": staged.filename,
            }
            for index, staged in enumerate(inputs)
        ]
    return document


def bundle_tar(spec: JobSpec) -> bytes:
    """The bundle as one uncompressed tar (a prompt is rarely worth compressing, and
    the copy never leaves the machine)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        job = protocol.JOB_DIR
        _add_dir(tar, job)
        _add_dir(tar, f"{job}/{protocol.FILES_DIR}")
        spec_json = json.dumps(spec_document(spec), ensure_ascii=False).encode("utf-8")
        _add_file(tar, f"{job}/{protocol.SPEC_FILE}", spec_json)
        for index, file in enumerate(spec.files):
            _add_file(tar, f"{job}/{protocol.job_file(index)}", file.content)
    return buffer.getvalue()


@dataclass(frozen=True)
class StreamedBundle:
    """A bundle tar sent in pieces: `size` bytes in all, held in memory except the
    inputs' contents, which `pieces` reads from their staged files as it goes."""

    size: int
    parts: tuple[bytes | WorkspaceInput, ...]

    def pieces(self) -> Iterator[bytes]:
        """The tar's bytes in order. An input file that is not its stated size (it was
        changed under us) raises OSError rather than break the frame's size."""
        for part in self.parts:
            if isinstance(part, bytes):
                yield part
            else:
                yield from _file_pieces(part)


def streamed_bundle(spec: JobSpec, inputs: Sequence[WorkspaceInput]) -> StreamedBundle:
    """The bundle of a job with inputs: as bundle_tar lays it out, plus job/inputs/<n>.
    The layout is tarfile's (PAX headers, data padded to whole blocks, two zero blocks,
    padding to a whole record), so the size is exact before anything is read."""
    job = protocol.JOB_DIR
    spec_json = json.dumps(spec_document(spec, inputs), ensure_ascii=False).encode("utf-8")
    head = [
        _dir_header(job),
        _dir_header(f"{job}/{protocol.FILES_DIR}"),
        _dir_header(f"{job}/{protocol.INPUTS_DIR}"),
        *_file_member(f"{job}/{protocol.SPEC_FILE}", spec_json),
    ]
    for index, file in enumerate(spec.files):
        head += _file_member(f"{job}/{protocol.job_file(index)}", file.content)
    parts: list[bytes | WorkspaceInput] = [b"".join(head)]
    for index, staged in enumerate(inputs):
        parts += [_file_header(f"{job}/{protocol.job_input(index)}", staged.size), staged]
        parts.append(_padding(staged.size))
    offset = sum(len(part) if isinstance(part, bytes) else part.size for part in parts)
    end = 2 * tarfile.BLOCKSIZE
    end += -(offset + end) % tarfile.RECORDSIZE
    parts.append(bytes(end))
    return StreamedBundle(offset + end, tuple(parts))


def _file_pieces(staged: WorkspaceInput) -> Iterator[bytes]:
    with staged.local.open("rb") as file:
        left = staged.size
        while left:
            chunk = file.read(min(left, STREAM_CHUNK))
            if not chunk:
                raise OSError(f"input {staged.local} is shorter than its {staged.size} bytes")
            left -= len(chunk)
            yield chunk
        if file.read(1):
            raise OSError(f"input {staged.local} is longer than its {staged.size} bytes")


def _dir_header(name: str) -> bytes:
    info = _owned(tarfile.TarInfo(name))
    info.type = tarfile.DIRTYPE
    info.mode = 0o700
    return _header(info)


def _file_header(name: str, size: int) -> bytes:
    info = _owned(tarfile.TarInfo(name))
    info.size = size
    info.mode = 0o600
    return _header(info)


def _file_member(name: str, content: bytes) -> list[bytes]:
    return [_file_header(name, len(content)), content, _padding(len(content))]


def _padding(size: int) -> bytes:
    return bytes(-size % tarfile.BLOCKSIZE)


def _header(info: tarfile.TarInfo) -> bytes:
    """The header TarFile.addfile writes for `info` in a PAX tar."""
    return info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape")


def read_output(tar_bytes: bytes) -> WorkerOutput:
    """Parse the tar of /bundle/out (the worker's frame or get_archive's). Missing or
    unreadable members read as empty: the outcome parser decides what their absence means."""
    return output_of(_members(tar_bytes))


def output_of(members: Mapping[str, bytes]) -> WorkerOutput:
    """The output from the files of out/ by name (those read_output would find)."""
    stderr = members.get(protocol.STDERR_FILE, b"").decode("utf-8", errors="replace")
    result = _result(members.get(protocol.RESULT_FILE))
    return WorkerOutput(result, members.get(protocol.STDOUT_FILE, b""), stderr)


def too_large_output(reason: str) -> WorkerOutput:
    """The output of a worker whose /bundle/out passed the cap: nothing kept, and why."""
    return WorkerOutput(None, b"", "", too_large=reason)


def name_in_out(name: str) -> str:
    """A member's name inside out/ (`out/stdout` → `stdout`); other names unchanged."""
    head, _, rest = name.partition("/")
    return rest if head == protocol.OUT_DIR and rest else name


def _add_dir(tar: tarfile.TarFile, name: str) -> None:
    info = _owned(tarfile.TarInfo(name))
    info.type = tarfile.DIRTYPE
    info.mode = 0o700
    tar.addfile(info)


def _add_file(tar: tarfile.TarFile, name: str, content: bytes) -> None:
    info = _owned(tarfile.TarInfo(name))
    info.size = len(content)
    info.mode = 0o600
    tar.addfile(info, io.BytesIO(content))


def _owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = protocol.WORKER_UID
    info.uname = info.gname = "worker"
    return info


def _members(tar_bytes: bytes) -> dict[str, bytes]:
    """Regular files of the archive by their name inside out/."""
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tar:
            for member in tar:
                extracted = tar.extractfile(member) if member.isfile() else None
                if extracted is not None:
                    found[name_in_out(member.name)] = extracted.read()
    except tarfile.TarError:
        pass  # a truncated archive keeps what was read before the damage
    return found


def _result(raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        document = json.loads(raw)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None
