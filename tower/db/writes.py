"""Retrying an owner's write through a database restart, up to a deadline.

Only a lost connection is retried: a statement the database refuses (bad data, a
constraint) would be refused again, so its error goes to the caller at once."""

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


async def write_with_retry(write: Callable[[], Awaitable[T]], deadline: float) -> T | None:
    """Run `write` until it succeeds; None if the database stayed unreachable until
    `deadline` (monotonic). Any error but a connection's is raised from the first try.
    Only safe for fenced writes, which are idempotent."""
    delay = FIRST_DELAY
    while True:
        try:
            return await write()
        except CONNECTION_ERRORS as error:
            if time.monotonic() + delay > deadline:
                log.error("write abandoned after retries: %r", error)
                return None
            log.warning("write failed, retrying in %.1fs: %r", delay, error)
        await asyncio.sleep(delay)
        delay = min(delay * 2, MAX_DELAY)
