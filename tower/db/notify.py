"""One LISTEN connection per replica, fanned out to in-process subscribers.

The connection is supervised: when it drops (PostgreSQL restart, network), the hub
reconnects with backoff, LISTENs again, and tells every `on_reconnect` callback, so
that subscribers re-read the tables for anything they may have missed meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import asyncpg

from tower.db import channels
from tower.db.outage import DATABASE_ERRORS

log = logging.getLogger(__name__)

Callback = Callable[[str], None]
ReconnectCallback = Callable[[], Awaitable[None] | None]

# Any job's events may have changed: the key of state_events() subscribers.
ANY_JOB = ""
# Channels whose payload is a job_id whose state (and so its events) changed.
_STATE_CHANNELS = (channels.JOB_PENDING, channels.JOB_FINISHED)


class _Waiters:
    """asyncio.Events by key, set when their key is announced."""

    def __init__(self) -> None:
        self._events: dict[str, set[asyncio.Event]] = defaultdict(set)

    @contextlib.contextmanager
    def subscribe(self, key: str) -> Iterator[asyncio.Event]:
        event = asyncio.Event()
        self._events[key].add(event)
        try:
            yield event
        finally:
            self._events[key].discard(event)
            if not self._events[key]:
                del self._events[key]

    def wake(self, key: str) -> None:
        for event in self._events.get(key, ()):
            event.set()

    def wake_all(self) -> None:
        for events in self._events.values():
            for event in events:
                event.set()


class NotifyHub:
    def __init__(self, database_url: str, *, check_interval: float = 1.0) -> None:
        self._url = database_url
        self._check_interval = check_interval
        self._callbacks: dict[str, list[Callback]] = defaultdict(list)
        self._finished = _Waiters()
        self._events = _Waiters()
        self._on_reconnect: list[ReconnectCallback] = []
        self._connection: Any = None
        self._task: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        self.connected = asyncio.Event()

    # --- subscribing -------------------------------------------------------------

    def on(self, channel: str, callback: Callback) -> None:
        self._callbacks[channel].append(callback)

    def on_reconnect(self, callback: ReconnectCallback) -> None:
        self._on_reconnect.append(callback)

    def finished_event(self, job_id: str) -> contextlib.AbstractContextManager[asyncio.Event]:
        """An event set when `job_id` is announced finished. Subscribe, then re-read the row."""
        return self._finished.subscribe(job_id)

    def job_events(self, job_id: str) -> contextlib.AbstractContextManager[asyncio.Event]:
        """An event set when `job_id` may have new events. Subscribe, then re-read them."""
        return self._events.subscribe(job_id)

    def state_events(self) -> contextlib.AbstractContextManager[asyncio.Event]:
        """An event set when any job may have a new state event."""
        return self._events.subscribe(ANY_JOB)

    # --- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        await self._connect()
        self._task = asyncio.create_task(self._supervise(), name="notify-hub")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._close()

    # --- internals -----------------------------------------------------------------

    async def _connect(self) -> None:
        connection = await asyncpg.connect(self._url, timeout=10)
        for channel in channels.ALL:
            await connection.add_listener(channel, self._dispatch)
        connection.add_termination_listener(lambda _: self._lost.set())
        self._connection = connection
        self._lost.clear()
        self.connected.set()

    async def _close(self) -> None:
        self.connected.clear()
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close(timeout=2)
            self._connection = None

    async def _supervise(self) -> None:
        while True:
            await self._wait_until_lost()
            log.warning("LISTEN connection lost; reconnecting")
            await self._close()
            await self._reconnect_with_backoff()
            await self._announce_reconnect()

    async def _wait_until_lost(self) -> None:
        # The termination listener covers clean closes; the probe covers silent drops.
        while not self._lost.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._lost.wait(), self._check_interval)
            if not self._lost.is_set() and not await self._probe():
                self._lost.set()

    async def _probe(self) -> bool:
        try:
            await self._connection.execute("SELECT 1", timeout=5)
        except DATABASE_ERRORS:
            return False
        return True

    async def _reconnect_with_backoff(self) -> None:
        delay = 0.1
        while True:
            try:
                await self._connect()
                log.info("LISTEN connection restored")
                return
            except DATABASE_ERRORS:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _announce_reconnect(self) -> None:
        self._wake_all_waiters()
        for callback in self._on_reconnect:
            outcome = callback()
            if outcome is not None:
                await outcome

    def _wake_all_waiters(self) -> None:
        # Waiters re-read their row after waking, so a spurious wake is harmless
        # and a notification lost while disconnected is not.
        self._finished.wake_all()
        self._events.wake_all()

    def _dispatch(self, _connection: Any, _pid: int, channel: str, payload: str) -> None:
        if channel == channels.JOB_FINISHED:
            self._finished.wake(payload)
        if channel in _STATE_CHANNELS:
            self._wake_events(payload, "state")
        elif channel == channels.JOB_EVENT:
            kind, *job_ids = payload.split(" ")
            for job_id in job_ids:
                self._wake_events(job_id, kind)
        for callback in self._callbacks.get(channel, ()):
            try:
                callback(payload)
            except Exception:
                log.exception("notification callback failed on %s", channel)

    def _wake_events(self, job_id: str, kind: str) -> None:
        self._events.wake(job_id)
        if kind == "state":
            self._events.wake(ANY_JOB)
