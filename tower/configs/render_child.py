"""The template renderer process: renders one template at a time for tower, in the
sandbox, under a memory limit, streaming the output back in frames (tower/configs/frames.py).

Started by tower/configs/renderer.py with an empty environment (no secrets to read),
it exits when tower closes its end of the pipe, which is also what happens when tower
dies. A render still running when it should not be is killed: by tower at its time
limit, or by the kernel (SIGALRM, never handled) should tower be gone.
"""

from __future__ import annotations

import os
import pickle
import resource
import signal
import sys
from collections.abc import Iterable
from typing import Any

from tower.configs import frames
from tower.configs.sandbox import OUTPUT_MAX, generate

# Output is sent when this much is pending: a 100 MB prompt streams in pieces.
_BATCH = 1 << 20


def main(memory_max: int, time_limit: float, passed_per_second: int) -> None:
    """Render until tower closes the pipe. `time_limit` and `passed_per_second` are
    tower's (tower/configs/renderer.py): they set the alarm, past tower's latest deadline."""
    # Ctrl-C in tower's terminal reaches its whole process group: tower stops gracefully,
    # and may still render meanwhile; this process ends when tower does.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    requests, replies = _own_pipes()
    _limit_memory(memory_max)
    frames.write_frame(replies, frames.READY)
    while True:
        try:
            tag, payload = frames.read_frame(requests)
        except frames.Gone:
            return  # tower closed the pipe or died
        if tag != frames.RENDER:
            return
        alarm = 2 * time_limit + (len(payload) + OUTPUT_MAX) / passed_per_second
        source, context = pickle.loads(payload)
        del payload
        _render(replies, source, context, alarm)


def _own_pipes() -> tuple[int, int]:
    """The pipes, on descriptors of their own: stdin reads nothing and stdout goes to
    stderr, so nothing but frames ever reaches tower."""
    requests, replies = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    os.close(devnull)
    return requests, replies


def _limit_memory(limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _render(replies: int, source: str, context: dict[str, Any], alarm: float) -> None:
    # The backstop should tower be gone: SIGALRM's default action ends the process.
    signal.setitimer(signal.ITIMER_REAL, alarm)
    try:
        _stream(replies, generate(source, context), _long_values(context))
    except MemoryError:
        frames.write_frame(replies, frames.FATAL, b"used more memory than the renderer has")
        sys.exit(1)
    except _TooLong:
        frames.write_frame(
            replies, frames.FAILED, f"rendered more than {OUTPUT_MAX} bytes".encode()
        )
    except Exception as error:
        # Whatever a template raises is the template's fault (RecursionError included).
        message = " ".join(str(error).split())[:1000] or type(error).__name__
        frames.write_frame(replies, frames.FAILED, message.encode("utf-8", "replace"))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


class _TooLong(Exception):
    pass


def _long_values(context: dict[str, Any]) -> dict[int, str]:
    """The names of the context's long strings (the prompt), by the identity of the value."""
    return {
        id(value): name
        for name, value in context.items()
        if isinstance(value, str) and len(value) >= _BATCH
    }


def _stream(replies: int, pieces: Iterable[str], long_values: dict[int, str]) -> None:
    """Small pieces go in batches; a large one goes alone, never copied into a batch, and
    `{{ prompt }}` goes as its name: tower has the prompt already, no need to pass it back."""
    pending: list[str] = []
    pending_chars = 0
    sent = 0
    for piece in pieces:
        # Characters are at most bytes: this stops a huge piece before it is encoded.
        if sent + pending_chars + len(piece) > OUTPUT_MAX:
            raise _TooLong
        if len(piece) >= _BATCH:
            sent += _send(replies, frames.OUTPUT, pending, sent)
            pending, pending_chars = [], 0
            name = long_values.get(id(piece))
            if name is None:
                sent += _send(replies, frames.OUTPUT, [piece], sent)
            else:
                frames.write_frame(replies, frames.VALUE, name.encode())
                sent += len(piece)
            continue
        pending.append(piece)
        pending_chars += len(piece)
        if pending_chars >= _BATCH:
            sent += _send(replies, frames.OUTPUT, pending, sent)
            pending, pending_chars = [], 0
    _send(replies, frames.DONE, pending, sent)


def _send(replies: int, tag: bytes, pieces: list[str], sent: int) -> int:
    if not pieces and tag == frames.OUTPUT:
        return 0
    # surrogatepass: a lone surrogate reaches tower, which refuses it as it always has.
    data = "".join(pieces).encode("utf-8", "surrogatepass")
    if sent + len(data) > OUTPUT_MAX:
        raise _TooLong
    frames.write_frame(replies, tag, data)
    return len(data)
