"""The worker's stdout as tower follows it: the job's output, then the worker's frames.

After the job, the worker prints `parpaing-worker artifacts <size>` and a newline, then
<size> bytes: a tar of what the job created or changed in /workspace (size 0: none),
which is spooled to a private temporary file as it comes, never held in memory; or
`parpaing-worker artifacts-file <size>` alone: the tar is in the bundle volume
(protocol.ARTIFACTS_FILE), for the runner to copy out (`InVolume`). Then
`parpaing-worker output <size>`, a newline and <size> bytes: a tar of /bundle/out.
Reading the result from the stream tower already follows costs a few milliseconds;
copying it out of the container (get_archive) costs Docker a helper process, tens of
milliseconds on a warm job's path. Then the worker's shell prints the done line. Frames
never reach the job's log; text that only looks like one does. The last frame before
the done line wins, and artifacts count only when an output frame follows them: the
worker prints its own after the engine's process group is gone, so whatever an engine
printed that looks like a frame is superseded. The markers and the header's format are
tower/execution/protocol.py's.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tower.execution.protocol import (
    ARTIFACTS_FILE_MARK,
    ARTIFACTS_MARK,
    DONE_LINE,
    OUTPUT_MARK,
    frame_size,
)

# Receives output to pass on: ("stdout", bytes).
Send = Callable[[str, bytes], None]


@dataclass(frozen=True)
class InVolume:
    """Artifacts the worker left in its bundle volume: `size` bytes of tar, still to copy."""

    size: int


# The artifacts of a frame: spooled to a file, or still in the worker's volume.
Artifacts = Path | InVolume


class WorkerStdout:
    """Feed it the container's stdout piece by piece; `feed` says when the done line
    came. `output` is then the last frame's payload, or None (tower copies /bundle/out
    instead). A frame larger than `max_frame` is read past and not kept. `artifacts`
    is the file holding the artifacts frame that preceded the last output frame, or
    None; an artifacts frame larger than `artifact_cap` is read past and not kept.
    Call `take_artifacts` to own that file, and `discard` to remove what is left."""

    def __init__(self, send: Send, max_frame: int, artifact_cap: int = 0) -> None:
        self._send_to = send
        self._max_frame = max_frame
        self._artifact_cap = artifact_cap
        self._window = b""
        self._left = 0  # payload bytes still to read
        self._payload: bytearray | None = None
        self._spool: Spool | None = None  # the artifacts frame being read
        self._pending: Artifacts | None = None  # the last whole artifacts frame
        self.output: bytes | None = None
        self.artifacts: Artifacts | None = None

    def take_artifacts(self) -> Artifacts | None:
        """The artifacts file, now the caller's to remove."""
        taken, self.artifacts = self.artifacts, None
        return taken

    def discard(self) -> None:
        """Remove every file this reader still holds."""
        if self._spool is not None:
            self._spool.discard()
            self._spool = None
        _removed(self._pending)
        _removed(self.artifacts)
        self._pending = self.artifacts = None

    def feed(self, data: bytes) -> bool:
        self._window += data
        while self._window:
            if self._left:
                self._read_payload()
            elif (done := self._scan()) is not None:
                return done
        return False

    def flush(self) -> None:
        """The stream ended without a done line: what was held back is output."""
        if not self._left:
            self._send(self._window)
        self._window = b""

    def _read_payload(self) -> None:
        piece, self._window = self._window[: self._left], self._window[self._left :]
        self._left -= len(piece)
        if self._spool is not None:
            self._spool.write(piece)
            if not self._left:
                self._artifacts_frame(self._spool.close())
                self._spool = None
        elif self._payload is not None:
            self._payload += piece
            if not self._left:
                self._output_frame(bytes(self._payload))
                self._payload = None

    def _output_frame(self, payload: bytes) -> None:
        self.output = payload
        if self._pending is not self.artifacts:
            _removed(self.artifacts)
        self.artifacts, self._pending = self._pending, None

    def _artifacts_frame(self, path: Artifacts | None) -> None:
        """A whole artifacts frame (None: empty, or too large to keep)."""
        if self._pending is not self.artifacts:
            _removed(self._pending)
        self._pending = path

    def _scan(self) -> bool | None:
        """One step over the window: True at the done line, False when more input is
        needed, None when a frame began (the loop reads its payload next)."""
        window = self._window
        done = window.find(DONE_LINE)
        marks = [(at, mark) for mark in MARKS if (at := window.find(mark)) >= 0]
        if marks and (done < 0 or min(marks)[0] < done):
            return self._at_mark(*min(marks))
        if done >= 0:
            self._send(window[:done])
            self._window = b""
            return True
        keep = max(_partial_match(window, line) for line in (DONE_LINE, *MARKS))
        self._send(window[: len(window) - keep])
        self._window = window[len(window) - keep :]
        return False

    def _at_mark(self, frame: int, mark: bytes) -> bool | None:
        window = self._window
        start = frame + len(mark)
        end = window.find(b"\n", start)
        digits = window[start:] if end < 0 else window[start:end]
        size = frame_size(digits)
        if size is None and not (end < 0 and not digits):
            self._send(window[:start])  # a lookalike: output, and scanning goes on after it
            self._window = window[start:]
            return None
        self._send(window[:frame])
        if end < 0 or size is None:  # the header is not whole yet
            self._window = window[frame:]
            return False
        self._window = window[end + 1 :]
        if mark == ARTIFACTS_FILE_MARK:
            kept = 0 < size <= self._artifact_cap
            self._artifacts_frame(InVolume(size) if kept else None)
        elif mark == ARTIFACTS_MARK:
            self._begin_artifacts(size)
        else:
            self._left = size
            self._payload = bytearray() if size <= self._max_frame else None
            if not size:
                self._output_frame(b"")
                self._payload = None
        return None

    def _begin_artifacts(self, size: int) -> None:
        self._left = size
        if 0 < size <= self._artifact_cap:
            self._spool = Spool()
        else:
            self._artifacts_frame(None)

    def _send(self, data: bytes) -> None:
        if data:
            self._send_to("stdout", data)


MARKS = (OUTPUT_MARK, ARTIFACTS_MARK, ARTIFACTS_FILE_MARK)


class Handover:
    """The artifacts file, handed from the thread that reads the worker's stdout to the
    run that stores it. Once the run has let go (`discard`: cancelled, failed), a file
    handed over later is removed at once, so none is left behind by a run cut short."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._path: Artifacts | None = None
        self._closed = False

    def give(self, path: Artifacts | None) -> None:
        with self._lock:
            if self._closed:
                _removed(path)
            else:
                _removed(self._path)
                self._path = path

    def take(self) -> Artifacts | None:
        with self._lock:
            taken, self._path = self._path, None
            return taken

    def in_volume(self) -> InVolume | None:
        """The artifacts still to copy out of the worker's volume, if that is what it holds."""
        with self._lock:
            return self._path if isinstance(self._path, InVolume) else None

    def discard(self) -> None:
        with self._lock:
            self._closed = True
            _removed(self._path)
            self._path = None


class Spool:
    """A private temporary file (0600) an artifacts frame is written into as it comes."""

    def __init__(self) -> None:
        descriptor, name = tempfile.mkstemp(prefix="parpaing-artifacts-")
        self.path = Path(name)
        self._file: BinaryIO = os.fdopen(descriptor, "wb")

    def write(self, piece: bytes) -> None:
        self._file.write(piece)

    def close(self) -> Path:
        self._file.close()
        return self.path

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()
        _removed(self.path)


def _removed(path: Artifacts | None) -> None:
    if isinstance(path, Path):
        path.unlink(missing_ok=True)


def _partial_match(window: bytes, line: bytes) -> int:
    """The length of the longest tail of `window` that is a proper prefix of `line`."""
    for size in range(min(len(line) - 1, len(window)), 0, -1):
        if window.endswith(line[:size]):
            return size
    return 0
