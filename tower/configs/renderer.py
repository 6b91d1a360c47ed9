"""Rendering templates in a child process that can be killed: a thread cannot be stopped,
and a template is untrusted code that may loop for hours or fill memory.

Renderer processes are started on first use and reused (a render costs a round trip on a
pipe, not a process start). One that overruns the time limit is killed and a new one
started at the next render; each has an address-space limit. They exit when tower closes
their pipe: when the replica's config store closes (tower/configs/store.py), at exit, or
when tower dies and the kernel closes it for them.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import pickle
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tower.configs import frames
from tower.configs.sandbox import OUTPUT_MAX
from tower.errors import Unavailable

TIME_LIMIT = 2.0
MEMORY_MAX = 1 << 30
# Renders run at once (more wait): each renderer is a process of about 20 MB.
RENDERERS_MAX = 2
# Starting a renderer imports Jinja2; on a loaded machine that may take a while, and it
# does not count against the template's time limit.
_START_LIMIT = 60.0
_ROOT = str(Path(__file__).resolve().parents[2])
_FRAME_MAX = OUTPUT_MAX + 4096
# Passing a 100 MB prompt to the renderer and its output back is copying, encoding and
# decoding, not the template's doing: the time limit grows by a second per this many
# bytes passed (a slow rate: a loaded machine passes several times more).
_PASSED_PER_SECOND = 50_000_000


def _deadline(start: float, passed: int) -> float:
    return start + TIME_LIMIT + passed / _PASSED_PER_SECOND


class RenderFailed(Exception):
    """The template failed; the message says how (for the job's error)."""


class _Discard(RenderFailed):
    """The template failed and took its renderer with it."""


class _Child:
    """One renderer process and tower's ends of its pipes (non-blocking)."""

    generation = 0

    def __init__(self) -> None:
        code = (
            f"import sys; sys.path.insert(0, {_ROOT!r}); "
            "from tower.configs.render_child import main; "
            f"main({MEMORY_MAX}, {TIME_LIMIT}, {_PASSED_PER_SECOND})"
        )
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-I", "-c", code],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env={},  # tower's environment holds secrets; the renderer needs none
                cwd="/",
            )
        except OSError as error:
            raise Unavailable(f"the template renderer did not start: {error}") from None
        assert self.process.stdin is not None and self.process.stdout is not None
        self.requests = self.process.stdin.fileno()
        self.replies = self.process.stdout.fileno()
        for fd in (self.requests, self.replies):
            os.set_blocking(fd, False)
            _widen(fd)
        try:
            tag, _ = frames.receive_frame(self.replies, time.monotonic() + _START_LIMIT, 0)
        except (frames.Gone, frames.Late):
            tag = b""
        if tag != frames.READY:
            # Not the template's doing: the job fails, saying so, and the next one retries.
            self.kill()
            raise Unavailable("the template renderer did not start")

    def render(self, source: str, context: Mapping[str, Any]) -> str:
        """The output; RenderFailed if the template fails. After any other exception
        (_Discard included) the renderer is in an unknown state: kill it."""
        start = time.monotonic()
        request = pickle.dumps((source, dict(context)), protocol=pickle.HIGHEST_PROTOCOL)
        sent = len(request)
        frames.send_frame(self.requests, frames.RENDER, request, _deadline(start, sent))
        del request
        pieces: list[str] = []
        received = 0
        while True:
            deadline = _deadline(start, sent + received)
            tag, payload = frames.receive_frame(self.replies, deadline, _FRAME_MAX)
            if tag == frames.FAILED:
                raise RenderFailed(payload.decode("utf-8", "replace"))
            if tag == frames.FATAL:
                raise _Discard(payload.decode("utf-8", "replace"))
            piece = _piece(tag, payload, context)
            received += len(piece)
            if received > OUTPUT_MAX:  # the renderer did not keep its own cap
                raise _Discard(f"rendered more than {OUTPUT_MAX} bytes")
            pieces.append(piece)
            if tag == frames.DONE:
                return "".join(pieces)

    def kill(self) -> None:
        self.process.kill()
        self.close()

    def close(self) -> None:
        """Close the pipes (the renderer exits on that) and reap it."""
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _piece(tag: bytes, payload: bytearray, context: Mapping[str, Any]) -> str:
    if tag == frames.VALUE:
        value = context.get(payload.decode("utf-8", "replace"))
        if not isinstance(value, str):
            raise frames.Garbled("not a value of the context")
        return value
    if tag in (frames.OUTPUT, frames.DONE):
        return payload.decode("utf-8", "surrogatepass")
    raise frames.Garbled(f"unexpected frame {tag!r}")


def _widen(pipe: int) -> None:
    """A 1 MiB pipe instead of 64 KiB: a long prompt passes in fewer round trips."""
    # Above /proc/sys/fs/pipe-max-size it fails: the default will do.
    with contextlib.suppress(OSError):
        fcntl.fcntl(pipe, fcntl.F_SETPIPE_SZ, 1 << 20)


class Renderers:
    """Idle renderers to reuse, at most RENDERERS_MAX busy at once."""

    def __init__(self) -> None:
        self._idle: list[_Child] = []
        self._lock = threading.Lock()
        self._turns = threading.BoundedSemaphore(RENDERERS_MAX)
        # Bumped by close(): a renderer busy then is closed when its render ends.
        self._generation = 0

    def render(self, source: str, context: Mapping[str, Any]) -> str:
        with self._turns:
            child = self._take()
            try:
                output = child.render(source, context)
            except frames.Late:
                child.kill()
                raise RenderFailed(f"took longer than {TIME_LIMIT:g} s") from None
            except (frames.Gone, frames.Garbled):
                child.kill()
                raise RenderFailed("the template renderer stopped (out of memory?)") from None
            except _Discard as failure:
                child.kill()
                raise RenderFailed(str(failure)) from None
            except RenderFailed:
                self._give_back(child)
                raise
            except BaseException:
                child.kill()
                raise
            self._give_back(child)
            return output

    def close(self) -> None:
        """Close the idle renderers now and the busy ones when their render ends; the
        next render starts a new one."""
        with self._lock:
            idle, self._idle = self._idle, []
            self._generation += 1
        for child in idle:
            child.close()

    def _take(self) -> _Child:
        with self._lock:
            if self._idle:
                return self._idle.pop()
            generation = self._generation
        child = _Child()
        child.generation = generation
        return child

    def _give_back(self, child: _Child) -> None:
        with self._lock:
            if child.generation == self._generation:
                self._idle.append(child)
                return
        child.close()


_renderers = Renderers()
atexit.register(_renderers.close)


def render(source: str, context: Mapping[str, Any]) -> str:
    """The template's output, rendered in a renderer process. RenderFailed says why not."""
    return _renderers.render(source, context)


def close() -> None:
    """Stop the renderer processes (a new one starts at the next render)."""
    _renderers.close()
