"""A process's peak resident memory over a block, read from /proc: how tests show that a
large body or file streams through tower instead of being held."""

from __future__ import annotations

import asyncio
from pathlib import Path


def _status(pid: int) -> dict[str, int]:
    """/proc/<pid>/status's memory lines, in bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields


def _reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS


class RssWatch:
    """The tower's peak resident memory over a block, above where it was at the start:
    VmRSS sampled every few ms, and VmHWM reset at the start (clear_refs "5")."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before = 0
        self.peak = 0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RssWatch:
        _reset_peak(self.pid)
        self.before = self.peak = _status(self.pid)["VmRSS"]
        self._task = asyncio.create_task(self._sample())
        return self

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, _status(self.pid)["VmRSS"])
            await asyncio.sleep(0.005)

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()
        self.peak = max(self.peak, *_status(self.pid).values())

    @property
    def growth(self) -> int:
        return self.peak - self.before
