"""Group commit: writes that arrive while one batch is in flight go together in the next.

A batch is one pipelined round trip and one commit (asyncpg's executemany/fetchmany are
atomic), so concurrent writers share the commit's WAL flush and, for statements that
NOTIFY, PostgreSQL's queue lock, which serialises every notifying commit. A lone write
goes at once: there is no timer, so nothing waits for a batch to fill.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from tower.db.outage import CONNECTION_ERRORS
from tower.db.pool import Connection, Pool

log = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")

# Enough to absorb every writer of a busy replica in one commit, small enough that one
# batch's statement stays short.
MAX_BATCH = 64

WriteBatch = Callable[[Connection, list[Item]], Awaitable[list[Result]]]


class GroupCommit(Generic[Item, Result]):
    """`write(connection, items)` writes all items atomically, one result per item."""

    def __init__(self, pool: Pool, write: WriteBatch[Item, Result], name: str) -> None:
        self._pool = pool
        self._write = write
        self._name = name
        self._waiting: list[tuple[Item, asyncio.Future[Result]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def write(self, item: Item) -> Result:
        """Write `item` in the next batch; returns its result or raises its error."""
        done: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, done))
        if self._writer is None:
            self._writer = asyncio.create_task(self._drain(), name=self._name)
        # The batch runs in its own task: a caller that goes away (a client hung up)
        # cancels only its wait, never the batch that carries other callers' writes.
        return await done

    async def close(self) -> None:
        """Wait for the batch in flight (callers still waiting on it get their answer)."""
        if self._writer is not None:
            await self._writer

    async def _drain(self) -> None:
        batch: list[tuple[Item, asyncio.Future[Result]]] = []
        try:
            while self._waiting:
                batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
                await self._write_batch(batch)
        except BaseException as stopped:
            # Cancelled (shutdown): nobody may be left waiting for an answer forever.
            for _, done in batch + self._waiting:
                _fail(done, stopped)
            self._waiting = []
            raise
        finally:
            self._writer = None

    async def _write_batch(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            results = await self._write_items([item for item, _ in batch])
        except Exception as error:
            if len(batch) == 1 or isinstance(error, CONNECTION_ERRORS):
                # A lost connection fails every write alike: each caller decides whether
                # to retry, rather than each write meeting the same outage alone in turn.
                for _, done in batch:
                    _fail(done, error)
                return
            # The batch rolled back as a whole. Alone, each write meets only its own fate:
            # one bad row must not fail the others.
            log.info("%s: batch of %d failed (%r); each alone", self._name, len(batch), error)
            for one in batch:
                await self._write_batch([one])
            return
        for (_, done), result in zip(batch, results, strict=True):
            if not done.done():
                done.set_result(result)

    async def _write_items(self, items: list[Item]) -> list[Result]:
        async with self._pool.acquire() as connection:
            return await self._write(connection, items)


def _fail(done: asyncio.Future[Result], error: BaseException) -> None:
    if done.done():
        return
    if isinstance(error, asyncio.CancelledError):
        done.cancel()
    else:
        done.set_exception(error)
