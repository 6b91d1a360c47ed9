"""A background loop that runs one action every `interval` seconds until stopped.

The queue's housekeeping (heartbeats, reaping, retention) must survive PostgreSQL
restarts: a round that fails on a connection error is logged and the next one retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from tower.db.outage import DATABASE_ERRORS

log = logging.getLogger(__name__)


class Periodic:
    def __init__(self, name: str, interval: float, action: Callable[[], Awaitable[None]]) -> None:
        self._name = name
        self._interval = interval
        self._action = action
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self._loop(), name=self._name)

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            # Cancelling mid-round is safe: each round is one transaction, rolled back.
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            await self._round()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval)

    async def _round(self) -> None:
        try:
            await self._action()
        except DATABASE_ERRORS as error:
            log.warning("%s: round failed, retrying next interval: %r", self._name, error)
        except Exception:
            # A bug in one round must not silently end the loop for the replica's lifetime.
            log.exception("%s: round failed", self._name)
