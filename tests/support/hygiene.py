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
from pathlib import Path

EXIT_GRACE_SECONDS = 120
STDERR_FD = 2


def descendants(root: int) -> list[int]:
    """Every live process below `root`, from /proc (children before their own)."""
    children: dict[int, list[int]] = {}
    for pid, parent in _parents().items():
        children.setdefault(parent, []).append(pid)
    found: list[int] = []
    pending = [root]
    while pending:
        below = children.get(pending.pop(), [])
        found += below
        pending += below
    return found


def _parents() -> dict[int, int]:
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # The command name, in parentheses, may hold spaces: fields follow its end.
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if fields[0] != "Z":  # a zombie is only waiting for its parent to reap it
                parents[int(stat.parent.name)] = int(fields[1])
    return parents


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
