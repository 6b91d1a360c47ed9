"""The worker's stdout as tower follows it: the job's output, then the worker's frames.

After the job, the worker prints `parpaing-worker output <size>` and a newline, then
<size> bytes: a tar of /bundle/out. Reading the result from the stream tower already
follows costs a few milliseconds; copying it out of the container (get_archive) costs
Docker a helper process, tens of milliseconds on a warm job's path. Then the worker's
shell prints the done line. Frames never reach the job's log; text that only looks like
one does. The last frame before the done line wins: the worker prints its own after the
engine's process group is gone, so whatever an engine printed that looks like a frame
is superseded. The markers and the header's format are tower/execution/protocol.py's.
"""

from __future__ import annotations

from collections.abc import Callable

from tower.execution.protocol import DONE_LINE, OUTPUT_MARK, frame_size

# Receives output to pass on: ("stdout", bytes).
Send = Callable[[str, bytes], None]


class WorkerStdout:
    """Feed it the container's stdout piece by piece; `feed` says when the done line
    came. `output` is then the last frame's payload, or None (tower copies /bundle/out
    instead). A frame larger than `max_frame` is read past and not kept."""

    def __init__(self, send: Send, max_frame: int) -> None:
        self._send_to = send
        self._max_frame = max_frame
        self._window = b""
        self._left = 0  # payload bytes still to read
        self._payload: bytearray | None = None
        self.output: bytes | None = None

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
        if self._payload is not None:
            self._payload += piece
            if not self._left:
                self.output, self._payload = bytes(self._payload), None

    def _scan(self) -> bool | None:
        """One step over the window: True at the done line, False when more input is
        needed, None when a frame began (the loop reads its payload next)."""
        window = self._window
        done, frame = window.find(DONE_LINE), window.find(OUTPUT_MARK)
        if frame >= 0 and (done < 0 or frame < done):
            return self._at_mark(frame)
        if done >= 0:
            self._send(window[:done])
            self._window = b""
            return True
        keep = max(_partial_match(window, DONE_LINE), _partial_match(window, OUTPUT_MARK))
        self._send(window[: len(window) - keep])
        self._window = window[len(window) - keep :]
        return False

    def _at_mark(self, frame: int) -> bool | None:
        window = self._window
        start = frame + len(OUTPUT_MARK)
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
        self._left = size
        self._payload = bytearray() if self._left <= self._max_frame else None
        self._window = window[end + 1 :]
        if not self._left and self._payload is not None:
            self.output, self._payload = b"", None
        return None

    def _send(self, data: bytes) -> None:
        if data:
            self._send_to("stdout", data)


def _partial_match(window: bytes, line: bytes) -> int:
    """The length of the longest tail of `window` that is a proper prefix of `line`."""
    for size in range(min(len(line) - 1, len(window)), 0, -1):
        if window.endswith(line[:size]):
            return size
    return 0
