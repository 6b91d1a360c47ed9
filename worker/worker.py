"""The in-container runner: reads a job bundle on stdin, runs it, leaves the result in /bundle/out.

Contract: docs/execution.md; its markers, frames and paths are stated in protocol.py,
which the image holds beside this file (tower/execution/protocol.py in a checkout).
Standard library only (the image's python3, 3.11).

0. In a container (the gateway's socket directory is mounted), listen on loopback for the
   engines' provider calls and forward them to the gateway's Unix socket (forwarder.py);
   likewise a second port to the egress proxy's socket, when its directory is mounted.
1. Print the ready line and block reading stdin (no CPU while idle) for the bundle,
   framed: `parpaing-bundle <size>`, a newline, <size> bytes of tar, which tower writes
   on the attach socket it also reads our output from. Unpack it into /bundle,
   refusing anything that would land outside it.
2. Unpack the job's inputs into /workspace (a file as <path>/<filename>, an archive's
   entries under <path>, checked entry by entry as at upload), place the bundle's files,
   then run pre-hook, engine, post-hook (or, for a dry run, nothing), copying their
   output to our stdout/stderr for the container's logs.
3. Write /bundle/out/stdout, /bundle/out/stderr, then result.json, last and atomically:
   its presence means the worker finished.
4. Send a tar of /bundle/out on stdout, framed: `parpaing-worker output <size>`, a
   newline, <size> bytes. Tower reads it from the output it follows (cheaper than
   copying it out of the container); the files stay for when no frame arrives. The
   tar streams, and holds at most protocol.output_cap(output_limit) bytes: past it,
   result.json alone goes, saying the result was too large.
SIGTERM/SIGINT, idle or not, are forwarded to the running process group (if any), then
the worker exits without a result; so does stdin ending before a whole bundle.

PARPAING_BUNDLE_DIR (default /bundle) and PARPAING_ROOT (a prefix for every absolute
path of the spec; empty in containers) let tests run the worker on a host.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import posixpath
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

try:
    import protocol  # in the worker image: beside this file
except ModuleNotFoundError:  # run from a checkout: the same file, in tower's package
    from tower.execution import protocol

import artifacts  # beside this file, in the image and in a checkout
import forwarder

HOOK_DIR = "/tmp/parpaing/hooks"
DIFF_PATH = "/tmp/parpaing/diff.patch"
# The turn's session state, in the bundle volume beside job/ and out/.
SESSION_TAR = "session.tar"
STDERR_TAIL = 64 * 1024
CHUNK = 64 * 1024
# Linux refuses one argv element longer than this (MAX_ARG_STRLEN, NUL included).
MAX_ARG_STRLEN = 32 * 4096
# While a process runs, how often to check whether it exited with its pipes still open
# (held by a background child): a check, not a busy loop.
EXIT_CHECK_SECONDS = 1.0

# Process groups of what is running now, for SIGTERM to forward to.
_running_groups: set[int] = set()


class WorkerError(Exception):
    """A job the worker cannot run as specified (reported in result.json as `error`)."""


class InputError(WorkerError):
    """An input that cannot be unpacked into the workspace (result.json's reason "input")."""


class NoBundle(Exception):
    """Stdin ended (or was not a bundle frame) before a whole bundle arrived."""


# --- output sinks ----------------------------------------------------------------------


class Echo:
    """Copies a process's output to one of our streams (the container's logs)."""

    def __init__(self, echo: BinaryIO) -> None:
        self._echo: BinaryIO | None = echo

    def write(self, chunk: bytes) -> None:
        if self._echo is None:
            return
        try:
            self._echo.write(chunk)
            self._echo.flush()
        except OSError:
            self._echo = None  # nobody reads our logs: the job goes on regardless


class Capped(Echo):
    """Stores the first `limit` bytes in `file` and counts them all; the rest is read
    and dropped, so a chatty engine never blocks on a full pipe."""

    def __init__(self, file: BinaryIO, limit: int, echo: BinaryIO) -> None:
        super().__init__(echo)
        self._file = file
        self._limit = limit
        self.total = 0

    def write(self, chunk: bytes) -> None:
        room = max(self._limit - self.total, 0)
        self.total += len(chunk)
        if room:
            kept = chunk[:room]
            self._file.write(kept)
            super().write(kept)


class Tail(Echo):
    """Keeps the last `size` bytes."""

    def __init__(self, size: int, echo: BinaryIO) -> None:
        super().__init__(echo)
        self._size = size
        self.data = bytearray()

    def write(self, chunk: bytes) -> None:
        super().write(chunk)
        self.data += chunk
        if len(self.data) > self._size:
            del self.data[: len(self.data) - self._size]

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


# --- running one process ---------------------------------------------------------------


def run_process(
    argv: list[str], *, stdin: str | None, cwd: Path, env: dict[str, str], out: Echo, err: Echo
) -> int:
    """Run argv in its own process group to its end; its exit code (negative: signal)."""
    with open(stdin or os.devnull, "rb") as source:
        try:
            process = subprocess.Popen(
                argv,
                stdin=source,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=cwd,
                env=env,
                process_group=0,
            )
        except OSError as error:
            raise WorkerError(f"cannot start {argv[0]!r}: {error.strerror}") from None
    _running_groups.add(process.pid)
    try:
        assert process.stdout is not None and process.stderr is not None
        _pump(process, {process.stdout.fileno(): out, process.stderr.fileno(): err})
        return process.wait()
    finally:
        _kill_group(process.pid, signal.SIGKILL)  # leftovers die with their leader
        _running_groups.discard(process.pid)
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()


def _pump(process: subprocess.Popen[bytes], sinks: dict[int, Echo]) -> None:
    """Copy both pipes to their sinks until they close. Once the process has exited,
    background children still holding a pipe are killed, so a job cannot hang here."""
    with selectors.DefaultSelector() as selector:
        for descriptor, sink in sinks.items():
            selector.register(descriptor, selectors.EVENT_READ, sink)
        while selector.get_map():
            ready = selector.select(timeout=EXIT_CHECK_SECONDS)
            if not ready and process.poll() is not None:
                _kill_group(process.pid, signal.SIGKILL)
            for key, _ in ready:
                chunk = os.read(key.fd, CHUNK)
                if chunk:
                    key.data.write(chunk)
                else:
                    selector.unregister(key.fd)


def _kill_group(group: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # already gone
        os.killpg(group, signum)


# --- the job ----------------------------------------------------------------------------


class Job:
    """One spec.json, with its paths mapped under PARPAING_ROOT."""

    def __init__(self, spec: dict[str, Any], job_dir: Path, root: str) -> None:
        self.spec = spec
        self.job_dir = job_dir
        self.root = root
        # The workspace as the job found it (after its inputs), when it keeps artifacts.
        self.before: artifacts.Snapshot | None = None

    def local(self, path: str) -> Path:
        return Path(self.root + path) if self.root else Path(path)

    def env(self) -> dict[str, str]:
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("PARPAING_")}
        home = {"HOME": str(self.local(protocol.HOME_DIR))}
        return inherited | home | dict(self.spec.get("env") or {})

    def artifact_limit(self) -> int:
        return 0 if self.spec.get("dry_run") else int(self.spec.get("artifact_limit") or 0)

    def collect_artifacts(self) -> artifacts.Collected | None:
        """What the job created or changed in the workspace (see artifacts.py)."""
        if self.before is None:
            return None
        workspace = self.local(protocol.WORKSPACE_DIR)
        commit = self.spec.get("workspace_commit")
        diff = None
        if commit:
            git_env = self.env() | {"GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1"}
            diff = artifacts.git_diff(workspace, str(commit), self.local(DIFF_PATH), git_env)
        collected = artifacts.collect(workspace, self.before, self.artifact_limit(), diff)
        state = [str(path) for path in self.spec.get("session_state") or []]
        if state:
            self.capture_session(collected, workspace, state)
        return collected

    def capture_session(
        self, collected: artifacts.Collected, workspace: Path, state: list[str]
    ) -> None:
        """The state a continued turn starts from, in the bundle volume (a continue
        brings it back through the same volume), within what the artifacts left."""
        target = self.job_dir.parent / SESSION_TAR
        room = self.artifact_limit() - collected.used()
        home = self.local(protocol.HOME_DIR)
        tar, size, error = artifacts.capture_session(workspace, home, state, target, room)
        collected.session, collected.session_size = tar, size
        if error:
            print(f"parpaing-worker: {error}", file=sys.stderr, flush=True)

    def place_files(self) -> list[str]:
        placed = []
        for entry in self.spec.get("files") or []:
            target = self.local(entry["path"])
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            _copy(self.job_dir / entry["source"], target, int(entry["mode"]))
            placed.append(entry["path"])
        return placed

    def engine_argv(self) -> list[str]:
        argv = [str(arg) for arg in self.spec["argv"]]
        if not any(protocol.PROMPT_PLACEHOLDER in arg for arg in argv):
            return argv
        prompt = self.local(self.spec["prompt_file"]).read_text(encoding="utf-8")
        resolved = [arg.replace(protocol.PROMPT_PLACEHOLDER, prompt) for arg in argv]
        _check_arg_lengths(resolved, len(prompt.encode("utf-8")))
        return resolved


def _copy(source: Path, target: Path, mode: int) -> None:
    # Created with its final mode, so the file is never readable by others even briefly.
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with open(source, "rb") as reader, open(descriptor, "wb") as writer:
        shutil.copyfileobj(reader, writer, 1 << 20)
        os.fchmod(writer.fileno(), mode)  # the umask may have narrowed it


def _check_arg_lengths(argv: list[str], prompt_bytes: int) -> None:
    for arg in argv:
        if len(arg.encode("utf-8")) + 1 > MAX_ARG_STRLEN:
            raise WorkerError(
                f"the prompt is {prompt_bytes} bytes, too long for one command-line argument "
                f"(at most {MAX_ARG_STRLEN - 1} bytes); it was not truncated. Use an engine "
                "that reads the prompt from stdin or a file."
            )


def run_phases(job: Job, out: Capped, err: Tail) -> tuple[str, int]:
    """(deciding phase, exit code): the first failure among pre-hook and engine, else
    the post-hook's. The post-hook runs whatever the engine's exit, not after a failed
    pre-hook (the engine never ran)."""
    cwd = job.local(job.spec.get("cwd") or protocol.WORKSPACE_DIR)
    cwd.mkdir(parents=True, exist_ok=True)
    env = job.env()
    hook_out = Echo(sys.stdout.buffer)
    pre = _run_hook(job, "pre_hook", cwd, env, hook_out, err)
    if pre != 0:
        return "pre_hook", pre
    stdin = job.local(job.spec["stdin"]) if job.spec.get("stdin") else None
    argv = job.engine_argv()
    engine = run_process(
        argv, stdin=str(stdin) if stdin else None, cwd=cwd, env=env, out=out, err=err
    )
    post = _run_hook(job, "post_hook", cwd, env, hook_out, err)
    if engine != 0 or post == 0:
        return "engine", engine
    return "post_hook", post


def _run_hook(job: Job, name: str, cwd: Path, env: dict[str, str], out: Echo, err: Tail) -> int:
    script = job.spec.get(name)
    if not script:
        return 0
    path = job.local(f"{HOOK_DIR}/{name}.sh")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text(script, encoding="utf-8")
    return run_process(["bash", str(path)], stdin=None, cwd=cwd, env=env, out=out, err=err)


def run_job(job: Job, out_dir: Path) -> dict[str, Any]:
    """Run the job; the fields of result.json it decides."""
    report: dict[str, Any] = {"argv": list(job.spec["argv"])}
    if job.spec.get("inputs"):
        report["inputs"] = unpack_inputs(job)
        # In the job's log, next to tower's staging line: what reached the workspace.
        unpacked = report["inputs"]
        print(
            f"parpaing: unpacked {unpacked['entries']} input entries, {unpacked['bytes']} bytes,"
            f" in {unpacked['duration_ms']} ms",
            file=sys.stderr,
            flush=True,
        )
    if job.artifact_limit() > 0:
        job.before = artifacts.snapshot(job.local(protocol.WORKSPACE_DIR))
    report["files"] = job.place_files()
    if job.spec.get("dry_run"):
        return report | {"phase": "dry_run", "exit_code": 0}
    err = Tail(STDERR_TAIL, sys.stderr.buffer)
    with open(out_dir / protocol.STDOUT_FILE, "wb") as stdout:
        out = Capped(stdout, int(job.spec["output_limit"]) + 1, sys.stdout.buffer)
        try:
            phase, code = run_phases(job, out, err)
        finally:
            (out_dir / protocol.STDERR_FILE).write_bytes(bytes(err.data))
    return report | {
        "phase": phase,
        "exit_code": code,
        "stdout_bytes": out.total,
        "stderr_tail": err.text(),
    }


def run_bundle(bundle: Path) -> tuple[int, Job | None]:
    """Run the bundle's job and write result.json, whatever happens. Returns the spec's
    output_limit as read before the job ran (the job may rewrite spec.json), or 0, and
    the job (None when its spec could not be read)."""
    started = time.monotonic()
    out_dir = bundle / protocol.OUT_DIR
    out_dir.mkdir(exist_ok=True)
    report = worker_report(None)
    output_limit = 0
    job = None
    try:
        job_dir = bundle / protocol.JOB_DIR
        spec = json.loads((job_dir / protocol.SPEC_FILE).read_text(encoding="utf-8"))
        output_limit = int(spec["output_limit"])
        job = Job(spec, job_dir, os.environ.get("PARPAING_ROOT", ""))
        report |= run_job(job, out_dir)
    except InputError as error:
        report |= {"error": str(error), "reason": protocol.RESULT_INPUT}
    except WorkerError as error:
        report["error"] = str(error)
    except Exception as error:  # reported, not raised: tower learns why from result.json
        report["error"] = f"{type(error).__name__}: {error}"
    report["duration_ms"] = round((time.monotonic() - started) * 1000)
    _write_atomically(out_dir / protocol.RESULT_FILE, json.dumps(report).encode("utf-8"))
    return output_limit, job


def worker_report(error: str | None) -> dict[str, Any]:
    """result.json before the job decides anything: the worker's own outcome."""
    report: dict[str, Any] = {
        "version": protocol.RESULT_VERSION,
        "exit_code": None,
        "phase": "worker",
        "argv": [],
    }
    return report | {"files": [], "stdout_bytes": 0, "stderr_tail": "", "error": error}


def _write_atomically(path: Path, content: bytes) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(content)
    os.replace(partial, path)


def send_output(out_dir: Path, cap: int) -> None:
    """Frame /bundle/out onto our stdout, after all the job printed (see step 4). The
    job could have left anything there: only regular files named in OUTPUT_FILES are
    sent (never through a link, never a FIFO or device), each measured before it is
    read, and the tar is streamed. Over `cap` bytes (a sparse file declares sizes far
    past what its tmpfs holds), result.json alone is sent, saying so."""
    with contextlib.ExitStack() as opened:
        members = [
            member
            for name in protocol.OUTPUT_FILES
            if (member := _open_member(out_dir, name, opened)) is not None
        ]
        refusal = _over_cap(members, cap)
        if refusal is not None:
            members = [_too_large_report(out_dir, members, refusal)]
        with contextlib.suppress(OSError):  # nobody reads: tower copies the files instead
            _write_frame(members)


def send_artifacts(job: Job | None) -> None:
    """The artifacts frame, before the output frame (always one, if empty: tower keeps
    the last one before the output frame, so nothing an engine printed stands in for
    it). Its failure costs the artifacts, never the result."""
    collected = None
    try:
        collected = job.collect_artifacts() if job is not None else None
    except Exception as error:
        print(f"parpaing-worker: artifacts not collected: {error!r}", file=sys.stderr, flush=True)
    workspace = job.local(protocol.WORKSPACE_DIR) if job is not None else Path("/")
    volume = job.local(protocol.ARTIFACTS_FILE) if job is not None else None
    with contextlib.suppress(OSError):  # nobody reads: no artifacts, as with no frame
        said = artifacts.send(collected, workspace, sys.stdout.buffer, volume)
        if said:
            print(said, file=sys.stderr, flush=True)


# One file of the output frame: its header, and where its bytes come from.
Member = tuple[tarfile.TarInfo, BinaryIO]


def _open_member(out_dir: Path, name: str, opened: contextlib.ExitStack) -> Member | None:
    """`name` in out_dir opened for the frame, or None unless it is a regular file.
    O_NOFOLLOW refuses a link; O_NONBLOCK keeps a FIFO from blocking the open."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        descriptor = os.open(out_dir / name, flags)
    except OSError:
        return None
    reader = opened.enter_context(open(descriptor, "rb"))  # noqa: SIM115 (the stack closes it)
    status = os.fstat(descriptor)
    if not stat.S_ISREG(status.st_mode):
        return None
    info = tarfile.TarInfo(f"{protocol.OUT_DIR}/{name}")
    info.size, info.mode, info.mtime = status.st_size, 0o600, int(status.st_mtime)
    info.uid = info.gid = protocol.WORKER_UID
    return info, reader


def _over_cap(members: list[Member], cap: int) -> str | None:
    """Why the frame of `members` would pass `cap` bytes, or None when it fits."""
    for count in range(1, len(members) + 1):
        if _tar_size([info for info, _ in members[:count]]) > cap:
            info = members[count - 1][0]
            return (
                f"{info.name} is {info.size} bytes; the output sent back is capped at"
                f" {cap} bytes (the job's output limit + 1 + {protocol.OUTPUT_MARGIN} bytes)"
            )
    return None


def _tar_size(infos: list[tarfile.TarInfo]) -> int:
    """The exact size of the tar _write_frame writes: each header and its padded data,
    the two end blocks, all padded to a whole record (as TarFile.close does)."""
    size = 2 * tarfile.BLOCKSIZE
    for info in infos:
        size += len(_header(info)) + -(-info.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
    return -(-size // tarfile.RECORDSIZE) * tarfile.RECORDSIZE


def _header(info: tarfile.TarInfo) -> bytes:
    return info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape")


def _too_large_report(out_dir: Path, members: list[Member], refusal: str) -> Member:
    """result.json saying the output was over the cap (kept on disk too, for when no
    frame arrives), built from the job's report when that one is small."""
    report = worker_report(refusal)
    for info, reader in members:
        if info.name.endswith(f"/{protocol.RESULT_FILE}") and info.size <= protocol.OUTPUT_MARGIN:
            with contextlib.suppress(ValueError):
                loaded = json.loads(reader.read(info.size))
                report = loaded if isinstance(loaded, dict) else report
    report |= {"error": refusal, "reason": protocol.RESULT_TOO_LARGE}
    content = json.dumps(report).encode("utf-8")
    with contextlib.suppress(OSError):
        _write_atomically(out_dir / protocol.RESULT_FILE, content)
    info = tarfile.TarInfo(f"{protocol.OUT_DIR}/{protocol.RESULT_FILE}")
    info.size, info.mode, info.mtime = len(content), 0o600, int(time.time())
    info.uid = info.gid = protocol.WORKER_UID
    return info, io.BytesIO(content)


def _write_frame(members: list[Member]) -> None:
    stdout = sys.stdout.buffer
    stdout.write(protocol.output_header(_tar_size([info for info, _ in members])))
    with tarfile.open(fileobj=stdout, mode="w|", format=tarfile.PAX_FORMAT, bufsize=CHUNK) as tar:
        for info, reader in members:
            tar.addfile(info, Padded(reader, info.size))
    stdout.flush()


class Padded:
    """Exactly `size` bytes of `reader`: a file that shrank since it was measured reads
    as zeros past its end, so the frame is never shorter than its header said."""

    def __init__(self, reader: BinaryIO, size: int) -> None:
        self._reader = reader
        self._left = size

    def read(self, size: int = -1) -> bytes:
        wanted = self._left if size < 0 else min(size, self._left)
        data = self._reader.read(wanted) if wanted else b""
        self._left -= wanted
        return data + bytes(wanted - len(data))


# --- the job's inputs --------------------------------------------------------------------

# As at upload (tower/uploads/archive.py): an archive of more entries is refused.
MAX_INPUT_ENTRIES = 100_000


class Unpacked:
    """What the inputs put in the workspace, for result.json."""

    def __init__(self) -> None:
        self.entries = 0
        self.bytes = 0

    def add(self, size: int) -> None:
        self.entries += 1
        self.bytes += size
        if self.entries > MAX_INPUT_ENTRIES:
            raise InputError(f"more than {MAX_INPUT_ENTRIES} entries")


def unpack_inputs(job: Job) -> dict[str, int]:
    """Unpack each input into the workspace, in order (a later one may overwrite an
    earlier one's files). Its source in the bundle goes once unpacked: the bundle volume
    is then free for /bundle/out. Entries are checked as at upload, whatever tower
    checked before: no absolute path, no `..`, no device or pipe, no link leading out,
    and nothing written through a link."""
    started = time.monotonic()
    workspace = job.local(protocol.WORKSPACE_DIR)
    workspace.mkdir(parents=True, exist_ok=True)
    unpacked = Unpacked()
    for index, entry in enumerate(job.spec["inputs"]):
        source = job.job_dir / entry["source"]
        where = f"inputs[{index}] ({entry['kind']} into {protocol.WORKSPACE_DIR}/{entry['path']})"
        try:
            destination = _directory_in(workspace, entry["path"])
            _unpack_input(entry, source, destination, workspace, unpacked)
        except InputError as error:
            raise InputError(f"{where}: {error}") from None
        except (OSError, tarfile.TarError, zipfile.BadZipFile, EOFError) as error:
            detail = error.strerror if isinstance(error, OSError) and error.strerror else error
            raise InputError(
                f"{where}: {detail} (the workspace holds WORKER_WORKSPACE_SIZE)"
            ) from None
        source.unlink(missing_ok=True)
    elapsed = round((time.monotonic() - started) * 1000)
    return {"entries": unpacked.entries, "bytes": unpacked.bytes, "duration_ms": elapsed}


def _unpack_input(
    entry: dict[str, Any], source: Path, destination: Path, workspace: Path, unpacked: Unpacked
) -> None:
    kind = entry["kind"]
    if kind == "file":
        name = str(entry.get("filename") or "")
        if not name or "/" in name or name in (".", ".."):
            raise InputError(f"a file input needs a plain file name, not {name!r}")
        with open(source, "rb") as reader:
            _write_file(destination / name, workspace, reader, 0o644)
        unpacked.add(source.stat().st_size)
    elif kind == protocol.SESSION_INPUT:
        with tarfile.open(source, "r:") as archive:
            for member in archive:
                _unpack_session_member(archive, member, workspace, unpacked)
    elif kind in ("tar", "tar.gz"):
        with tarfile.open(source, "r:gz" if kind == "tar.gz" else "r:") as archive:
            for member in archive:
                _unpack_tar_member(archive, member, destination, workspace, unpacked)
    elif kind == "zip":
        with zipfile.ZipFile(source) as archive:
            for info in archive.infolist():
                _unpack_zip_member(archive, info, destination, workspace, unpacked)
    else:
        raise InputError(f"unknown kind {kind!r}")


def _unpack_session_member(
    archive: tarfile.TarFile, member: tarfile.TarInfo, workspace: Path, unpacked: Unpacked
) -> None:
    """One entry of a continued turn's session state: workspace/<path> into the
    workspace, home/<path> into $HOME, each checked against its own root."""
    # The workspace is PARPAING_ROOT + WORKSPACE_DIR: $HOME is under the same root.
    home = Path(str(workspace)[: -len(protocol.WORKSPACE_DIR)] + protocol.HOME_DIR)
    head, _, rest = member.name.partition("/")
    roots = {protocol.SESSION_WORKSPACE: workspace, protocol.SESSION_HOME: home}
    if head not in roots:
        raise InputError(f"session entry {member.name[:200]!r} is neither workspace nor home")
    if not rest:
        return  # the root itself
    if member.islnk():
        link_head, _, link_rest = member.linkname.partition("/")
        if link_head != head:
            raise InputError(f"session entry {member.name[:200]!r} links across roots")
        member.linkname = link_rest
    member.name = rest
    root = roots[head]
    root.mkdir(parents=True, exist_ok=True)
    _unpack_tar_member(archive, member, root, root, unpacked)


def _relative(name: str, entry: str | None = None) -> str:
    """`name` normalised, when it stays inside its directory; InputError otherwise."""
    entry = entry or name
    if not name or "\x00" in name or name.startswith("/"):
        raise InputError(f"entry {entry[:200]!r} has an absolute or empty path")
    normal = posixpath.normpath(name)
    if normal == ".." or normal.startswith("../"):
        raise InputError(f"entry {entry[:200]!r} leads outside the workspace")
    return normal


def _directory_in(workspace: Path, path: str) -> Path:
    if not path:
        return workspace
    normal = _relative(path)
    directory = workspace / normal
    _make_dirs(directory, workspace)
    return directory


def _make_dirs(directory: Path, workspace: Path) -> None:
    directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    _check_inside(directory, workspace)


def _check_inside(path: Path, workspace: Path) -> None:
    """`path`, links resolved, is the workspace or in it: a link an archive made earlier
    cannot carry a later entry out."""
    real, root = os.path.realpath(path), os.path.realpath(workspace)
    if real != root and not real.startswith(root + os.sep):
        raise InputError(f"{path} leads outside the workspace (through a link)")


def _write_file(target: Path, workspace: Path, reader: BinaryIO, mode: int) -> None:
    """A regular file, never written through a link (O_NOFOLLOW, parents checked)."""
    with reader:
        _make_dirs(target.parent, workspace)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
        with open(os.open(target, flags, mode), "wb") as writer:
            shutil.copyfileobj(reader, writer, 1 << 20)
            os.fchmod(writer.fileno(), mode)


def _make_link(target: Path, workspace: Path, name: str, link: str) -> None:
    """A symbolic link whose target, read from where it stands, stays inside."""
    if link.startswith("/"):
        raise InputError(f"link {name[:200]!r} points to an absolute path")
    _relative(posixpath.join(posixpath.dirname(name), link), name)
    _make_dirs(target.parent, workspace)
    if target.is_symlink() or target.is_file():
        target.unlink()
    os.symlink(link, target)


def _unpack_tar_member(
    archive: tarfile.TarFile,
    member: tarfile.TarInfo,
    destination: Path,
    workspace: Path,
    unpacked: Unpacked,
) -> None:
    name = _relative(member.name)
    target = destination / name
    mode = (member.mode & 0o755) | 0o600
    if member.isdir():
        _make_dirs(target, workspace)
        os.chmod(target, mode | 0o700)
        unpacked.add(0)
    elif member.isreg():
        reader = archive.extractfile(member)
        assert reader is not None  # a regular file always has content, if empty
        _write_file(target, workspace, reader, mode)
        unpacked.add(member.size)
    elif member.issym():
        _make_link(target, workspace, name, member.linkname)
        unpacked.add(0)
    elif member.islnk():
        source = destination / _relative(member.linkname, member.name)
        _check_inside(source, workspace)
        _make_dirs(target.parent, workspace)
        if target.is_symlink() or target.is_file():
            target.unlink()
        os.link(source, target, follow_symlinks=False)
        unpacked.add(0)
    else:
        raise InputError(f"entry {member.name[:200]!r} is not a file, a directory or a link")


def _unpack_zip_member(
    archive: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    destination: Path,
    workspace: Path,
    unpacked: Unpacked,
) -> None:
    name = _relative(info.filename)
    target = destination / name
    unix = info.external_attr >> 16  # Unix mode bits, when made on Unix
    if info.is_dir():
        _make_dirs(target, workspace)
        unpacked.add(0)
    elif stat.S_ISLNK(unix):
        link = archive.read(info)[:4096].decode("utf-8", "replace")
        _make_link(target, workspace, name, link)
        unpacked.add(0)
    elif stat.S_IFMT(unix) and not stat.S_ISREG(unix):
        raise InputError(f"entry {info.filename[:200]!r} is not a file, a directory or a link")
    else:
        mode = (stat.S_IMODE(unix) & 0o755) | 0o600 if unix else 0o644
        # A zip entry reads as at most its declared size (zipfile stops there).
        _write_file(target, workspace, archive.open(info), mode)
        unpacked.add(info.file_size)


# --- receiving the bundle -----------------------------------------------------------------


class Exactly:
    """A reader of the next `size` bytes of `source`: NoBundle if it ends sooner."""

    def __init__(self, source: BinaryIO, size: int) -> None:
        self._source = source
        self.left = size

    def read(self, size: int = -1) -> bytes:
        wanted = self.left if size < 0 else min(size, self.left)
        data = self._source.read(wanted) if wanted else b""
        if len(data) < wanted:
            raise NoBundle(f"stdin ended {self.left - len(data)} bytes short of the bundle")
        self.left -= len(data)
        return data

    def into(self, buffer: memoryview) -> None:
        """Fill `buffer` whole (NoBundle if the frame or the stream ends sooner)."""
        if len(buffer) > self.left:
            raise NoBundle(f"the bundle's tar runs past its frame ({self.left} bytes left)")
        filled = 0
        while filled < len(buffer):
            got = self._source.readinto(buffer[filled:])  # type: ignore[attr-defined]
            if not got:
                raise NoBundle(f"stdin ended {self.left - filled} bytes short of the bundle")
            filled += got
        self.left -= filled


def receive_bundle(source: BinaryIO, bundle: Path) -> None:
    """Read one framed bundle from `source` and unpack it into `bundle`, streaming (the
    tar is never held whole in memory). Raises NoBundle on a short or garbled frame,
    WorkerError on a member that would land outside `bundle` or one that does not fit.
    The frame is read to its end in every case, so tower's write of it completes."""
    header = source.readline(protocol.BUNDLE_HEADER_MAX)
    if not header:
        raise NoBundle("stdin ended before a bundle")
    size = protocol.bundle_size(header)
    if size is None:
        raise NoBundle(f"stdin did not start with a bundle frame: {header[:40]!r}")
    payload = Exactly(source, size)
    try:
        _unpack(payload, bundle)
    finally:
        while payload.left:  # the tar's end padding, or what a refused bundle left unread
            payload.read(CHUNK)


def _unpack(payload: Exactly, bundle: Path) -> None:
    """The bundle's members, read header by header. Not tarfile's stream mode: it copies
    every MiB three times through fresh buffers, which made a 100 MB input cost 0.7-0.9 s
    of this process, against 0.3-0.4 s for the bytes through Docker. Tower writes plain
    ustar headers (bundle.py: short ASCII names), so an extended one is refused."""
    buffer = memoryview(bytearray(1 << 20))
    try:
        while (member := _next_member(payload)) is not None:
            _unpack_member(payload, member, bundle, buffer)
    except OSError as error:
        # Most likely the bundle volume is full: BUNDLE_VOLUME_SIZE bounds a job's files.
        raise WorkerError(
            f"unpacking the job's bundle into {bundle} failed: {error.strerror or error}"
            " (its size is bounded by BUNDLE_VOLUME_SIZE)"
        ) from None


def _next_member(payload: Exactly) -> tarfile.TarInfo | None:
    """The next member's header; None at the end of the archive (a zero block)."""
    block = memoryview(bytearray(tarfile.BLOCKSIZE))
    payload.into(block)
    if not any(block):
        return None
    try:
        member = tarfile.TarInfo.frombuf(bytes(block), tarfile.ENCODING, "surrogateescape")
    except tarfile.HeaderError as error:
        raise NoBundle(f"the bundle is not a whole tar: {error}") from None
    if member.type in tarfile.GNU_TYPES or member.type in (tarfile.XHDTYPE, tarfile.XGLTYPE):
        raise WorkerError(f"bundle member {member.name!r} has an extended header; refused")
    if member.size < 0:
        raise NoBundle(f"bundle member {member.name!r} has a negative size")
    return member


def _unpack_member(
    payload: Exactly, member: tarfile.TarInfo, bundle: Path, buffer: memoryview
) -> None:
    """Directories and regular files only, at relative paths without `..`: the bundle
    never holds anything else, and a link or an escaping path could write outside it.
    Everything is created private to the worker user (only the worker reads it)."""
    parts = Path(member.name).parts
    if not parts or member.name.startswith("/") or ".." in parts:
        raise WorkerError(f"bundle member {member.name!r} is outside the bundle; refused")
    target = bundle.joinpath(*parts)
    if member.isdir():
        target.mkdir(mode=0o700, parents=True, exist_ok=True)
        return
    if not member.isreg():
        raise WorkerError(f"bundle member {member.name!r} is not a file or directory; refused")
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # O_NOFOLLOW: never write through a link, whatever the directory already held.
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
    with open(os.open(target, flags, 0o600), "wb", buffering=0) as writer:
        left = member.size
        while left:
            piece = buffer[: min(left, len(buffer))]
            payload.into(piece)
            _write_all(writer, piece)
            left -= len(piece)
    payload.into(buffer[: -member.size % tarfile.BLOCKSIZE])  # to the next whole block


def _write_all(writer: BinaryIO, piece: memoryview) -> None:
    """An unbuffered write may take less than it is given; a full disk raises."""
    while piece:
        written = writer.write(piece)
        if not written:
            raise OSError(errno.ENOSPC, "no room left")
        piece = piece[written:]


def refused_bundle(bundle: Path, error: WorkerError) -> None:
    """The job cannot run: say why in result.json, as for any worker error. What was
    unpacked goes first: a bundle that filled the volume leaves no room for the report."""
    shutil.rmtree(bundle / protocol.JOB_DIR, ignore_errors=True)
    out_dir = bundle / protocol.OUT_DIR
    out_dir.mkdir(exist_ok=True)
    report = worker_report(str(error)) | {"duration_ms": 0}
    _write_atomically(out_dir / protocol.RESULT_FILE, json.dumps(report).encode("utf-8"))


# --- signals ------------------------------------------------------------------------------


def handle_stop_signals() -> None:
    """SIGTERM/SIGINT stop the worker at once, idle or not. Installed before the ready
    line, so none sent after it is lost. A handler, not a blocked mask: a blocking read
    is resumed after a handler returns (PEP 475), so the handler exits itself; and
    handlers, unlike a mask, are reset when a child execs."""
    signal.signal(signal.SIGTERM, _forward_and_exit)
    signal.signal(signal.SIGINT, _forward_and_exit)


def _forward_and_exit(signum: int, _frame: object) -> None:
    for group in list(_running_groups):
        _kill_group(group, signum)
    os._exit(128 + signum)  # no result.json: tower is stopping this job


def forward_to_gateway() -> None:
    """In a worker container, where the gateway's socket directory is mounted, listen on
    the loopback address engines are given (protocol.WORKER_GATEWAY_URL) before the ready
    line, so no engine connects before it listens. On a host (tests), nothing."""
    if Path(protocol.GATEWAY_SOCKET_DIR).is_dir():
        forwarder.start(protocol.GATEWAY_PORT, protocol.GATEWAY_SOCKET)
    # The egress proxy's relay, where tower mounted its socket (docs/egress.md): only a
    # job given HTTP(S)_PROXY is told of it, and the proxy refuses any other job.
    if Path(protocol.EGRESS_SOCKET_DIR).is_dir():
        forwarder.start(protocol.EGRESS_PORT, protocol.EGRESS_SOCKET)


def main() -> int:
    handle_stop_signals()
    forward_to_gateway()
    bundle = Path(os.environ.get("PARPAING_BUNDLE_DIR", protocol.BUNDLE_DIR))
    print(protocol.READY_LINE.decode("ascii"), flush=True)
    output_limit, job = 0, None  # a refused bundle sends back its report alone
    try:
        receive_bundle(sys.stdin.buffer, bundle)
    except NoBundle as error:
        print(f"parpaing-worker: no job: {error}", file=sys.stderr, flush=True)
        return 1  # no result.json: tower reports the worker's failure
    except WorkerError as error:
        refused_bundle(bundle, error)
    else:
        output_limit, job = run_bundle(bundle)
    send_artifacts(job)
    send_output(bundle / protocol.OUT_DIR, protocol.output_cap(output_limit))
    return 0


if __name__ == "__main__":
    sys.exit(main())
