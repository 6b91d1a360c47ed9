"""Nothing a test starts may outlive the test session.

A child process still holding pytest's output, or a thread still blocked when the
interpreter exits, keeps the run from ending after its summary is printed: CI then
times out long after the last test, with no clue why. So at the session's end leftover
child processes are named, killed and fail the session, and the interpreter's exit is
bounded: past a grace period every thread's stack is printed and the process exits 1.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import signal
import threading
from collections.abc import Mapping
from pathlib import Path

EXIT_GRACE_SECONDS = 120
STDERR_FD = 2


def leftovers(root: int) -> list[int]:
    """Processes the tests left running: below `root`, or holding its output."""
    stats = _stats()  # one reading of /proc for both questions
    below = descendants(root, stats)
    return below + [pid for pid in holders_of_our_output(root, stats) if pid not in below]


def descendants(root: int, stats: Mapping[int, _Stat]) -> list[int]:
    """Every live process below `root` (children before their own)."""
    children: dict[int, list[int]] = {}
    for pid, stat in stats.items():
        children.setdefault(stat.parent, []).append(pid)
    found: list[int] = []
    pending = [root]
    while pending:
        below = children.get(pending.pop(), [])
        found += below
        pending += below
    return found


def holders_of_our_output(root: int, stats: Mapping[int, _Stat]) -> list[int]:
    """Processes started after `root`, not below it, that can still write to the pipe or
    socket of its stdout or stderr (orphans of a test, reparented away): whoever reads the
    run's output waits for them too. A reader such as `tee` only reads, so it is spared."""
    outputs = {_link(f"/proc/{root}/fd/{fd}") for fd in (1, 2)}
    streams = {link for link in outputs if link and link.startswith(("pipe:", "socket:"))}
    born = stats[root].started
    return [
        pid
        for pid, stat in stats.items()
        if stat.started > born and pid != root and streams & _writable_files(pid)
    ]


class _Stat:
    def __init__(self, line: str) -> None:
        # The command name, in parentheses, may hold spaces: fields follow its end.
        fields = line.rsplit(")", 1)[1].split()
        self.zombie = fields[0] == "Z"
        self.parent = int(fields[1])
        self.started = int(fields[19])  # clock ticks after boot


def _stats() -> dict[int, _Stat]:
    stats: dict[int, _Stat] = {}
    for path in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            stat = _Stat(path.read_text())
            if not stat.zombie:  # a zombie only waits for its parent to reap it
                stats[int(path.parent.name)] = stat
    return stats


def _writable_files(pid: int) -> set[str]:
    found: set[str] = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            link = _link(str(fd))
            if link and _writable(pid, fd.name):
                found.add(link)
    return found


def _writable(pid: int, fd: str) -> bool:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/fdinfo/{fd}").read_text().splitlines():
            if line.startswith("flags:"):
                return int(line.split()[1], 8) & os.O_ACCMODE != os.O_RDONLY
    return False


def _link(path: str) -> str | None:
    with contextlib.suppress(OSError):
        return os.readlink(path)
    return None


def command_line(pid: int) -> str:
    with contextlib.suppress(OSError):
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        return raw.replace(b"\0", b" ").decode(errors="replace").strip() or "?"
    return "(gone)"


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def blocking_threads() -> list[str]:
    """Threads the interpreter will wait for at exit."""
    return [
        thread.name
        for thread in threading.enumerate()
        if not thread.daemon and thread is not threading.main_thread()
    ]


def bound_the_exit() -> None:
    """Past the grace, print every thread's stack and exit 1 instead of hanging."""
    # File descriptor 2, not sys.stderr: pytest may have replaced or closed the object.
    faulthandler.dump_traceback_later(EXIT_GRACE_SECONDS, exit=True, file=STDERR_FD)
