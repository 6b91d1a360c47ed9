"""Retrying an owner's write through a database outage.

Only a lost connection is retried: a statement the database refuses (bad data, a
constraint) would be refused again, so its error goes to the caller at once.

A job's outcome (its log, artifacts and finish) is retried with no deadline: the run
is over, and what it produced is lost if the write gives up before PostgreSQL answers
again, however long that takes. The caller ends the wait by cancelling (a replica that
stops gives it a lease: queue/dispatcher.py). A write that is fenced off when it gets
through (the lease went meanwhile) changes nothing, so retrying late is always safe."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tower.db.outage import CONNECTION_ERRORS

log = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_DELAY = 0.1
MAX_DELAY = 2.0


async def write_with_retry(
    write: Callable[[], Awaitable[T]], deadline: float | None = None, what: str = "write"
) -> T | None:
    """Run `write` until it succeeds. With a `deadline` (monotonic): None if the
    database stayed unreachable until then; without, until it answers. Any error but
    a connection's is raised from the first try. Only safe for fenced writes, which
    are idempotent. `what` names the write in the log."""
    delay = FIRST_DELAY
    failed_since: float | None = None
    while True:
        try:
            written = await write()
        except CONNECTION_ERRORS as error:
            now = time.monotonic()
            if deadline is not None and now + delay > deadline:
                log.error("%s abandoned after retries: %r", what, error)
                return None
            if failed_since is None:
                failed_since = now
                log.warning("%s failed, retrying until the database answers: %r", what, error)
        else:
            if failed_since is not None:
                log.info("%s written after %.1fs of retries", what, time.monotonic() - failed_since)
            return written
        await asyncio.sleep(delay)
        delay = min(delay * 2, MAX_DELAY)
