"""Frames between tower and its template renderer process: a tag byte, a length, bytes.

Tower's side reads and writes to a deadline (non-blocking pipes polled), so a renderer
that stops answering costs its time limit and no more. Nothing the renderer sends is
unpickled: it renders untrusted templates, so its frames are only ever bytes to tower.
"""

from __future__ import annotations

import os
import select
import struct
import time

_HEADER = struct.Struct("!cQ")
_READ_MAX = 1 << 20

# Tower → renderer
RENDER = b"r"
# Renderer → tower
READY = b"k"
OUTPUT = b"o"  # a piece of the output, more to come
VALUE = b"v"  # a piece of the output that is one of the context's values: its name follows
DONE = b"d"  # the last piece of the output
FAILED = b"e"  # the template failed; the message follows, the renderer goes on
FATAL = b"x"  # the renderer ran out of memory; the message follows, then it exits


class Gone(Exception):
    """The other end closed its pipe (it exited or was killed)."""


class Late(Exception):
    """The deadline passed before the frame was through."""


class Garbled(Exception):
    """The other end broke the protocol."""


# --- the renderer's side: blocking pipes, no deadline --------------------------------


def write_frame(fd: int, tag: bytes, payload: bytes | memoryview = b"") -> None:
    _write_all(fd, _HEADER.pack(tag, len(payload)), None)
    _write_all(fd, payload, None)


def read_frame(fd: int) -> tuple[bytes, bytearray]:
    header = _read_exactly(fd, _HEADER.size, None)
    tag, length = _HEADER.unpack(header)
    return tag, _read_exactly(fd, length, None)


# --- tower's side: non-blocking pipes, a deadline (time.monotonic()) ------------------


def send_frame(fd: int, tag: bytes, payload: bytes, deadline: float) -> None:
    _write_all(fd, _HEADER.pack(tag, len(payload)), deadline)
    _write_all(fd, payload, deadline)


def receive_frame(fd: int, deadline: float, limit: int) -> tuple[bytes, bytearray]:
    """The next frame; Garbled if its payload is longer than `limit`."""
    tag, length = _HEADER.unpack(_read_exactly(fd, _HEADER.size, deadline))
    if length > limit:
        raise Garbled(f"a frame of {length} bytes")
    return tag, _read_exactly(fd, length, deadline)


def _write_all(fd: int, data: bytes | memoryview, deadline: float | None) -> None:
    view = memoryview(data).cast("B")
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            _wait(fd, select.POLLOUT, deadline)
        except BrokenPipeError:
            raise Gone from None
        _check(deadline)


def _read_exactly(fd: int, length: int, deadline: float | None) -> bytearray:
    buffer = bytearray(length)
    view = memoryview(buffer)
    done = 0
    while done < length:
        try:
            # In place: a 100 MB frame is not copied piece by piece.
            count = os.readv(fd, [view[done : done + _READ_MAX]])
        except BlockingIOError:
            _wait(fd, select.POLLIN, deadline)
            continue
        if count == 0:
            raise Gone
        done += count
        _check(deadline)
    return buffer


def _wait(fd: int, event: int, deadline: float | None) -> None:
    """Until `fd` is ready (only non-blocking pipes, those with a deadline, get here)."""
    assert deadline is not None
    poller = select.poll()
    poller.register(fd, event)
    left = deadline - time.monotonic()
    if left <= 0 or not poller.poll(left * 1000):
        raise Late


def _check(deadline: float | None) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise Late
