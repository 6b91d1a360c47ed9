"""A tower served over real HTTP inside the test's event loop (uvicorn on a free port)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import uvicorn

from tower.app import create_app
from tower.db.embedded import free_port
from tower.execution.runner import Runner
from tower.settings import Settings


@contextlib.asynccontextmanager
async def live_tower(
    settings: Settings, runner: Runner | None = None, host: str = "127.0.0.1"
) -> AsyncIterator[str]:
    """Serve a tower until the block ends; yields its loopback URL. `host` is where it
    listens ("0.0.0.0": every host address, for tests that workers still cannot reach it)."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings, runner),
        host=host,
        port=port,
        log_level="warning",
        lifespan="on",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("tower exited during start-up")
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def client_for(base_url: str, api_key: str = "") -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as client:
        yield client
