"""The in-container runner: waits for a job bundle, runs it, leaves the result in /bundle/out.

Contract: docs/execution.md. Standard library only (the image's python3, 3.11).

1. Block SIGUSR1, print the ready line, and wait in sigwait: an idle warm container
   costs no CPU. Tower put_archive's the bundle into /bundle, then sends SIGUSR1.
2. Place the bundle's files, then run pre-hook, engine, post-hook (or, for a dry run,
   nothing), copying their output to our stdout/stderr for the container's logs.
3. Write /bundle/out/stdout, /bundle/out/stderr, then result.json, last and atomically:
   its presence means the worker finished.
4. Send a tar of /bundle/out on stdout, framed: `parpaing-worker output <size>`, a
   newline, <size> bytes. Tower reads it from the output it follows (cheaper than
   copying it out of the container); the files stay for when no frame arrives.
SIGTERM before a job exits at once; during one it is forwarded to the running process
group, then the worker exits without a result.

PARPAING_BUNDLE_DIR (default /bundle) and PARPAING_ROOT (a prefix for every absolute
path of the spec; empty in containers) let tests run the worker on a host.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any, BinaryIO

READY = "parpaing-worker ready"
OUTPUT_HEADER = "parpaing-worker output {size}\n"
OUTPUT_FILES = ("stdout", "stderr", "result.json")
HOME = "/home/worker"
HOOK_DIR = "/tmp/parpaing/hooks"
PROMPT_PLACEHOLDER = "{prompt}"
STDERR_TAIL = 64 * 1024
CHUNK = 64 * 1024
# Linux refuses one argv element longer than this (MAX_ARG_STRLEN, NUL included).
MAX_ARG_STRLEN = 32 * 4096
# While a process runs, how often to check whether it exited with its pipes still open
# (held by a background child): a check, not a busy loop.
EXIT_CHECK_SECONDS = 1.0
WAKE_SIGNALS = {signal.SIGUSR1, signal.SIGTERM, signal.SIGINT}

# Process groups of what is running now, for SIGTERM to forward to.
_running_groups: set[int] = set()


class WorkerError(Exception):
    """A job the worker cannot run as specified (reported in result.json as `error`)."""


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

    def local(self, path: str) -> Path:
        return Path(self.root + path) if self.root else Path(path)

    def env(self) -> dict[str, str]:
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("PARPAING_")}
        return inherited | {"HOME": str(self.local(HOME))} | dict(self.spec.get("env") or {})

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
        if not any(PROMPT_PLACEHOLDER in arg for arg in argv):
            return argv
        prompt = self.local(self.spec["prompt_file"]).read_text(encoding="utf-8")
        resolved = [arg.replace(PROMPT_PLACEHOLDER, prompt) for arg in argv]
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
    cwd = job.local(job.spec.get("cwd") or "/workspace")
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
    report: dict[str, Any] = {"argv": list(job.spec["argv"]), "files": job.place_files()}
    if job.spec.get("dry_run"):
        return report | {"phase": "dry_run", "exit_code": 0}
    err = Tail(STDERR_TAIL, sys.stderr.buffer)
    with open(out_dir / "stdout", "wb") as stdout:
        out = Capped(stdout, int(job.spec["output_limit"]) + 1, sys.stdout.buffer)
        try:
            phase, code = run_phases(job, out, err)
        finally:
            (out_dir / "stderr").write_bytes(bytes(err.data))
    return report | {
        "phase": phase,
        "exit_code": code,
        "stdout_bytes": out.total,
        "stderr_tail": err.text(),
    }


def run_bundle(bundle: Path) -> None:
    """Run the bundle's job and write result.json, whatever happens."""
    started = time.monotonic()
    out_dir = bundle / "out"
    out_dir.mkdir(exist_ok=True)
    report: dict[str, Any] = {"version": 1, "exit_code": None, "phase": "worker", "argv": []}
    report |= {"files": [], "stdout_bytes": 0, "stderr_tail": "", "error": None}
    try:
        spec = json.loads((bundle / "job" / "spec.json").read_text(encoding="utf-8"))
        job = Job(spec, bundle / "job", os.environ.get("PARPAING_ROOT", ""))
        report |= run_job(job, out_dir)
    except WorkerError as error:
        report["error"] = str(error)
    except Exception as error:  # reported, not raised: tower learns why from result.json
        report["error"] = f"{type(error).__name__}: {error}"
    report["duration_ms"] = round((time.monotonic() - started) * 1000)
    _write_atomically(out_dir / "result.json", json.dumps(report).encode("utf-8"))


def _write_atomically(path: Path, content: bytes) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(content)
    os.replace(partial, path)


def send_output(out_dir: Path) -> None:
    """Frame /bundle/out onto our stdout, after all the job printed (see step 4)."""
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for name in OUTPUT_FILES:
            if (out_dir / name).is_file():
                tar.add(out_dir / name, arcname=f"out/{name}")
    payload = archive.getvalue()
    header = OUTPUT_HEADER.format(size=len(payload)).encode("ascii")
    with contextlib.suppress(OSError):  # nobody reads: tower copies the files instead
        sys.stdout.buffer.write(header + payload)
        sys.stdout.buffer.flush()


# --- signals ------------------------------------------------------------------------------


def wait_for_bundle() -> bool:
    """Announce readiness and sleep until told: True for SIGUSR1 (the bundle is in
    place), False for SIGTERM/SIGINT. The signals are blocked first, so one sent right
    after the ready line is never lost."""
    signal.pthread_sigmask(signal.SIG_BLOCK, WAKE_SIGNALS)
    print(READY, flush=True)
    received = signal.sigwait(WAKE_SIGNALS)
    return received == signal.SIGUSR1


def handle_signals_while_running() -> None:
    """Unblock what wait_for_bundle blocked (children inherit the mask, and an engine
    with SIGTERM blocked could not be stopped), forward SIGTERM, ignore repeat SIGUSR1s.
    Handlers, unlike the mask, are reset when a child execs."""
    signal.signal(signal.SIGUSR1, lambda _signum, _frame: None)
    signal.signal(signal.SIGTERM, _forward_and_exit)
    signal.signal(signal.SIGINT, _forward_and_exit)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, WAKE_SIGNALS)


def _forward_and_exit(signum: int, _frame: object) -> None:
    for group in list(_running_groups):
        _kill_group(group, signum)
    os._exit(128 + signum)  # no result.json: tower is stopping this job


def main() -> int:
    if not wait_for_bundle():
        return 128 + signal.SIGTERM
    handle_signals_while_running()
    bundle = Path(os.environ.get("PARPAING_BUNDLE_DIR", "/bundle"))
    run_bundle(bundle)
    send_output(bundle / "out")
    return 0


if __name__ == "__main__":
    sys.exit(main())
