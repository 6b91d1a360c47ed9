"""The in-container worker, run on this host as a real process with a bundle in a temp dir.

Each test makes a bundle with bundle_tar, starts worker/worker.py, waits for its ready
line, writes the framed bundle on its stdin as tower does, and reads what it left in
out/. PARPAING_ROOT maps the spec's absolute paths (/tmp/parpaing/..., /workspace) under
the test's temp dir.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from tower.configs.defaults import shipped_defaults
from tower.configs.models import Engine, Profile, Template
from tower.configs.parse import parse_engine, parse_profile, parse_template
from tower.execution.bundle import bundle_tar, read_output
from tower.execution.docker.worker_stdout import WorkerStdout
from tower.execution.protocol import BUNDLE_MARK, DONE_LINE, READY_LINE, bundle_header
from tower.execution.slots import ContainerShape
from tower.execution.spec import PROMPT_PATH, JobSpec, SpecFile, build_spec
from tower.settings import Settings

WORKER = Path(__file__).resolve().parents[2] / "worker" / "worker.py"
READY = READY_LINE + b"\n"
# A bound on each wait, so a broken worker fails the test instead of hanging it.
DEADLINE = 60.0
# SigBlk and SigIgn in /proc/<pid>/status: one bit per signal.
SIGTERM_BIT = 1 << (signal.SIGTERM - 1)
SIGINT_BIT = 1 << (signal.SIGINT - 1)


def base_spec(**changes: Any) -> JobSpec:
    spec = JobSpec(
        job_id="agent-0123456789ab",
        argv=("cat",),
        env={},
        cwd="/workspace",
        files=(SpecFile(PROMPT_PATH, b"hello worker\n"),),
        stdin=PROMPT_PATH,
        prompt_file=PROMPT_PATH,
        pre_hook=None,
        post_hook=None,
        dry_run=False,
        timeout_seconds=60,
        output_limit=1 << 20,
        output_format="text",
        shape=ContainerShape("parpaing-worker:latest", "1g", 1.0, 256, "", "none"),
    )
    return replace(spec, **changes)


@dataclass
class Finished:
    returncode: int
    stdout: bytes
    stderr: bytes
    out: Path
    root: Path

    @property
    def result(self) -> dict[str, Any]:
        document = json.loads((self.out / "result.json").read_bytes())
        assert isinstance(document, dict)
        return document

    def file(self, name: str) -> bytes:
        return (self.out / name).read_bytes()


class WorkerProcess:
    """worker.py with an empty bundle dir in `tmp`, ready and reading its stdin."""

    def __init__(self, tmp: Path) -> None:
        self.bundle = tmp / "bundle"
        self.root = tmp / "root"
        self.bundle.mkdir()
        self.root.mkdir()
        env = os.environ | {
            "PARPAING_BUNDLE_DIR": str(self.bundle),
            "PARPAING_ROOT": str(self.root),
        }
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self.process.stdout is not None
        first = self.process.stdout.readline()
        assert first == READY, first

    def send(self, data: bytes) -> None:
        """Write on the worker's stdin; it stays open, as a container's does."""
        assert self.process.stdin is not None
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def start(self, spec: JobSpec) -> None:
        self.send(framed(bundle_tar(spec)))

    def finish(self) -> Finished:
        stdout, stderr = self.process.communicate(timeout=DEADLINE)
        return Finished(self.process.returncode, stdout, stderr, self.bundle / "out", self.root)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


def framed(tar_bytes: bytes) -> bytes:
    return bundle_header(len(tar_bytes)) + tar_bytes


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.kill()


def started(tmp: Path, workers: list[WorkerProcess]) -> WorkerProcess:
    worker = WorkerProcess(tmp)
    workers.append(worker)
    return worker


def run(tmp: Path, workers: list[WorkerProcess], spec: JobSpec) -> Finished:
    worker = started(tmp, workers)
    worker.start(spec)
    return worker.finish()


def shell(script: str) -> tuple[str, ...]:
    return ("bash", "-c", script)


# --- the engine's output ------------------------------------------------------------------


def test_engine_reads_the_prompt_on_stdin_and_its_stdout_is_kept(
    tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    finished = run(tmp_path, workers, base_spec())
    assert finished.returncode == 0
    assert finished.file("stdout") == b"hello worker\n"
    result = finished.result
    assert result["version"] == 1
    assert (result["phase"], result["exit_code"], result["error"]) == ("engine", 0, None)
    assert result["stdout_bytes"] == len(b"hello worker\n")
    assert result["argv"] == ["cat"]
    assert result["files"] == [PROMPT_PATH]
    assert isinstance(result["duration_ms"], int)
    # Copied to the worker's own stdout too: the container's logs.
    assert b"hello worker\n" in finished.stdout


def test_result_json_is_the_last_thing_written(
    tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    finished = run(tmp_path, workers, base_spec())
    names = sorted(path.name for path in finished.out.iterdir())
    assert names == ["result.json", "stderr", "stdout"]  # no partial file left behind
    newest = max(finished.out.iterdir(), key=lambda path: path.stat().st_mtime_ns)
    assert newest.name == "result.json"


def test_out_is_sent_on_stdout_as_a_frame_after_the_job_output(
    tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    finished = run(tmp_path, workers, base_spec())
    log: list[bytes] = []
    stdout = WorkerStdout(lambda _stream, data: log.append(data), 1 << 20)
    stdout.feed(finished.stdout + DONE_LINE)  # the worker's shell prints the done line
    assert stdout.output is not None
    sent = read_output(stdout.output)
    assert sent.result == finished.result
    assert (sent.stdout, sent.stderr) == (finished.file("stdout"), finished.file("stderr").decode())
    assert b"".join(log) == b"hello worker\n"  # the frame is not output


def test_a_5_mb_prompt_reaches_the_engine_byte_identical(
    tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    """build_spec → bundle_tar → worker placement → engine stdin → out/stdout."""
    prompt = big_prompt(5 * 1024 * 1024)
    spec = build_spec(
        {"prompt": prompt, "output_format": "text"},
        shipped_profile("default"),
        stdin_cat_engine(),
        shipped_templates() | {"default": Template(name="default", source="{{ prompt }}")},
        Settings(max_result_size=8 * 1024 * 1024),
        "agent-0123456789ab",
        "token",
    )
    finished = run(tmp_path, workers, spec)
    expected = prompt.encode("utf-8")
    assert finished.result["exit_code"] == 0
    placed = (finished.root / PROMPT_PATH.lstrip("/")).read_bytes()
    assert hashlib.sha256(placed).hexdigest() == hashlib.sha256(expected).hexdigest()
    assert (
        hashlib.sha256(finished.file("stdout")).hexdigest() == hashlib.sha256(expected).hexdigest()
    )


def test_stdout_beyond_the_limit_is_counted_not_stored_and_never_blocks(
    tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    limit = 64 * 1024
    written = limit * 20  # far more than a pipe buffer: a blocked engine would hang
    spec = base_spec(argv=shell(f"head -c {written} /dev/zero; echo done >&2"), output_limit=limit)
    finished = run(tmp_path, workers, spec)
    assert finished.result["exit_code"] == 0
    assert finished.result["stdout_bytes"] == written
    assert len(finished.file("stdout")) == limit + 1
    assert "done" in finished.result["stderr_tail"]


def test_stderr_keeps_its_last_64_kib(tmp_path: Path, workers: list[WorkerProcess]) -> None:
    spec = base_spec(argv=shell("head -c 200000 /dev/zero | tr '\\0' a >&2; echo END >&2"))
    finished = run(tmp_path, workers, spec)
    stderr = finished.file("stderr")
    assert len(stderr) == 64 * 1024
    assert stderr.endswith(b"aaaEND\n")
    assert finished.result["stderr_tail"] == stderr.decode()


def test_a_failing_engine_reports_its_exit_code_and_stderr(
    tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    finished = run(tmp_path, workers, base_spec(argv=shell("echo 'model refused' >&2; exit 7")))
    assert finished.returncode == 0  # the worker itself finished fine
    result = finished.result
    assert (result["phase"], result["exit_code"]) == ("engine", 7)
    assert result["stderr_tail"] == "model refused\n"


def test_an_engine_that_cannot_start_is_the_workers_error(
    tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    finished = run(tmp_path, workers, base_spec(argv=("no-such-engine-binary",)))
    result = finished.result
    assert result["phase"] == "worker"
    assert "cannot start 'no-such-engine-binary'" in result["error"]


def test_a_background_child_holding_stdout_does_not_hang_the_job(
    tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    finished = run(tmp_path, workers, base_spec(argv=shell("sleep 600 & echo started")))
    assert finished.result["exit_code"] == 0
    assert finished.file("stdout") == b"started\n"


def test_the_engine_runs_with_no_signal_blocked_and_its_own_stdin(
    tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    """The engine must not inherit a blocked mask (an engine with SIGTERM blocked could
    not be stopped), nor the worker's stdin (the container's, which tower writes on)."""
    script = "grep -E 'SigBlk|SigIgn' /proc/self/status; readlink /proc/self/fd/0"
    finished = run(tmp_path, workers, base_spec(argv=shell(script), stdin=None))
    blocked, ignored, stdin = finished.file("stdout").decode().splitlines()
    assert int(blocked.split()[1], 16) == 0
    assert int(ignored.split()[1], 16) & (SIGTERM_BIT | SIGINT_BIT) == 0
    assert stdin == os.devnull


def test_the_engine_gets_the_spec_env_home_and_cwd(
    tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    spec = base_spec(argv=shell('echo "$TOKEN $HOME $PWD"'), env={"TOKEN": "job-token"})
    finished = run(tmp_path, workers, spec)
    root = finished.root
    assert finished.file("stdout").decode() == f"job-token {root}/home/worker {root}/workspace\n"


def test_placed_files_keep_their_bytes_and_mode(
    tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    content = bytes(range(256)) * 10
    files = (
        SpecFile(PROMPT_PATH, b"p"),
        SpecFile("/home/worker/.claude/CLAUDE.md", content, 0o644),
    )
    finished = run(tmp_path, workers, base_spec(files=files))
    placed = finished.root / "home/worker/.claude/CLAUDE.md"
    assert placed.read_bytes() == content
    assert placed.stat().st_mode & 0o777 == 0o644
    assert (finished.root / PROMPT_PATH.lstrip("/")).stat().st_mode & 0o777 == 0o600


# --- prompt as one argument ---------------------------------------------------------------


def test_arg_from_file_puts_the_whole_prompt_in_one_argument(
    tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    prompt = "line one\nline 'two' with $HOME and {braces}\n" * 100
    spec = base_spec(
        argv=("printf", "%s", "--message={prompt}"),
        files=(SpecFile(PROMPT_PATH, prompt.encode()),),
        stdin=None,
    )
    finished = run(tmp_path, workers, spec)
    assert finished.file("stdout").decode() == f"--message={prompt}"
    assert finished.result["argv"] == ["printf", "%s", "--message={prompt}"]


def test_arg_from_file_refuses_a_prompt_too_long_for_argv(
    tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    spec = base_spec(
        argv=("printf", "%s", "{prompt}"),
        files=(SpecFile(PROMPT_PATH, b"x" * 200_000),),
        stdin=None,
    )
    finished = run(tmp_path, workers, spec)
    result = finished.result
    assert result["phase"] == "worker"
    assert "200000 bytes" in result["error"]
    assert "not truncated" in result["error"]
    assert finished.file("stdout") == b""


# --- hooks and dry run --------------------------------------------------------------------


def test_a_failing_pre_hook_skips_the_engine(tmp_path: Path, workers: list[WorkerProcess]) -> None:
    spec = base_spec(
        argv=shell("touch engine-ran"),
        pre_hook="echo 'setup broke' >&2\nexit 3\n",
        post_hook="touch post-ran",
    )
    finished = run(tmp_path, workers, spec)
    result = finished.result
    assert (result["phase"], result["exit_code"]) == ("pre_hook", 3)
    assert "setup broke" in result["stderr_tail"]
    assert not (finished.root / "workspace/engine-ran").exists()
    assert not (finished.root / "workspace/post-ran").exists()


def test_hooks_run_around_the_engine_in_order(tmp_path: Path, workers: list[WorkerProcess]) -> None:
    spec = base_spec(
        argv=shell("echo engine >> order"),
        pre_hook="echo pre >> order",
        post_hook="echo post >> order",
    )
    finished = run(tmp_path, workers, spec)
    assert finished.result["exit_code"] == 0
    assert (finished.root / "workspace/order").read_text() == "pre\nengine\npost\n"


def test_a_failing_post_hook_after_a_good_engine_decides(
    tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    spec = base_spec(argv=shell("echo fine"), post_hook="exit 4")
    result = run(tmp_path, workers, spec).result
    assert (result["phase"], result["exit_code"]) == ("post_hook", 4)


def test_a_failing_engine_decides_even_when_the_post_hook_runs(
    tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    spec = base_spec(argv=shell("exit 5"), post_hook="touch post-ran; exit 0")
    finished = run(tmp_path, workers, spec)
    assert (finished.result["phase"], finished.result["exit_code"]) == ("engine", 5)
    assert (finished.root / "workspace/post-ran").exists()


def test_dry_run_places_files_reports_argv_and_runs_nothing(
    tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    spec = base_spec(
        argv=shell("touch engine-ran"),
        pre_hook="touch pre-ran",
        post_hook="touch post-ran",
        dry_run=True,
    )
    finished = run(tmp_path, workers, spec)
    result = finished.result
    assert (result["phase"], result["exit_code"], result["error"]) == ("dry_run", 0, None)
    assert result["argv"] == ["bash", "-c", "touch engine-ran"]
    assert result["files"] == [PROMPT_PATH]
    assert (finished.root / PROMPT_PATH.lstrip("/")).read_bytes() == b"hello worker\n"
    workspace = finished.root / "workspace"
    assert not workspace.exists() or not any(workspace.iterdir())


# --- signals ------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_while_idle_exits_at_once_without_a_result(
    tmp_path: Path, workers: list[WorkerProcess], signum: int
) -> None:
    worker = started(tmp_path, workers)  # ready, blocked reading its stdin
    worker.process.send_signal(signum)
    assert worker.process.wait(timeout=DEADLINE) == 128 + signum
    finished = worker.finish()
    assert not (finished.out / "result.json").exists()


@pytest.mark.parametrize("cut", [0, 10, len(BUNDLE_MARK) + 3, 1500, -700, -1])
def test_stdin_ending_before_a_whole_bundle_exits_without_a_result(
    tmp_path: Path, workers: list[WorkerProcess], cut: int
) -> None:
    """Cut in the header, in a member, or in the tar's end padding: no job runs."""
    worker = started(tmp_path, workers)
    frame = framed(bundle_tar(base_spec(argv=shell("touch engine-ran"))))
    worker.send(frame[:cut])
    finished = worker.finish()  # closes stdin
    assert finished.returncode == 1
    assert b"no job" in finished.stderr
    assert not (finished.out / "result.json").exists()
    assert not (finished.root / "workspace/engine-ran").exists()


def test_stdin_that_is_not_a_bundle_frame_runs_nothing(
    tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    worker = started(tmp_path, workers)
    worker.send(b"hello\n" + bundle_tar(base_spec()))
    finished = worker.finish()
    assert finished.returncode == 1
    assert b"did not start with a bundle frame" in finished.stderr
    assert not (finished.out / "result.json").exists()


def escaping(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> bytes:
    """A bundle with a good spec, then one member `name` meant to land outside it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        with tarfile.open(fileobj=io.BytesIO(bundle_tar(base_spec()))) as good:
            for member in good:
                tar.addfile(member, good.extractfile(member) if member.isfile() else None)
        info = tarfile.TarInfo(name)
        info.type, info.linkname, info.size = kind, link, 4 if kind == tarfile.REGTYPE else 0
        tar.addfile(info, io.BytesIO(b"pwnd") if kind == tarfile.REGTYPE else None)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "kind", "link"),
    [
        ("../escaped", tarfile.REGTYPE, ""),
        ("job/../../escaped", tarfile.REGTYPE, ""),
        ("{tmp}/escaped", tarfile.REGTYPE, ""),  # absolute
        ("job/link", tarfile.SYMTYPE, "{tmp}"),
        ("job/hard", tarfile.LNKTYPE, "{tmp}/escaped"),
        ("job/" + "x" * 120, tarfile.REGTYPE, ""),  # an extended (PAX) header: not tower's
    ],
)
def test_a_bundle_member_escaping_the_bundle_dir_is_refused(
    tmp_path: Path, workers: list[WorkerProcess], name: str, kind: bytes, link: str
) -> None:
    worker = started(tmp_path, workers)
    tmp = str(tmp_path)
    worker.send(framed(escaping(name.format(tmp=tmp), kind, link.format(tmp=tmp))))
    finished = worker.finish()
    assert finished.returncode == 0
    result = finished.result
    assert (result["phase"], result["exit_code"]) == ("worker", None)
    assert "refused" in result["error"]
    assert not (tmp_path / "escaped").exists()
    assert not (finished.out.parent / "job/link").is_symlink()
    assert not (finished.root / "workspace").exists()  # the job never ran


def test_sigterm_during_a_job_reaches_the_engine_and_the_worker_exits(
    tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    mark = tmp_path / "engine-got-term"
    script = f'trap "echo term > {mark}; exit 0" TERM; echo started; sleep 600 & wait'
    worker = started(tmp_path, workers)
    worker.start(base_spec(argv=shell(script)))
    assert worker.process.stdout is not None
    assert worker.process.stdout.readline() == b"started\n"  # the engine is running
    worker.process.send_signal(signal.SIGTERM)
    finished = worker.finish()
    assert finished.returncode == 128 + signal.SIGTERM
    assert not (finished.out / "result.json").exists()
    wait_for(mark.exists, "the engine never received SIGTERM")
    assert mark.read_text() == "term\n"


# --- helpers ------------------------------------------------------------------------------


def wait_for(condition: Any, message: str) -> None:
    """Poll until `condition()` holds; nothing announces a trap handler's file write."""
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.02)


def big_prompt(size: int) -> str:
    """`size` bytes of varied text with multi-byte characters, newlines and braces."""
    unit = "Größe {x} — ünïcødé ✓ 🚀 line\n\t'quotes' \"and\" $VARS\\n\n"
    text = unit * (size // len(unit.encode()) + 1)
    return text.encode()[:size].decode("utf-8", errors="ignore")


def shipped_profile(name: str) -> Profile:
    content = next(c for kind, n, c in shipped_defaults() if kind == "profile" and n == name)
    return parse_profile(name, content)


def shipped_templates() -> dict[str, Template]:
    return {
        name: parse_template(name, content)
        for kind, name, content in shipped_defaults()
        if kind == "template"
    }


def stdin_cat_engine() -> Engine:
    return parse_engine(
        "cat",
        'id = "cat"\nname = "cat"\nbinary = "cat"\noutput = "text"\n[prompt]\nvia = "stdin"\n',
    )
