"""A started NotifyHub for tests that use one without a whole tower."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from tower.db.notify import NotifyHub


@contextlib.asynccontextmanager
async def running_hub(database_url: str) -> AsyncIterator[NotifyHub]:
    hub = NotifyHub(database_url)
    await hub.start()
    try:
        yield hub
    finally:
        await hub.stop()
