"""Waiting for a condition tests cannot be told about (a file another process removes):
checked often, bounded by a deadline that is a failure, never a pause that hopes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


async def until(condition: Callable[[], bool], what: str, deadline: float = 30.0) -> None:
    ends = time.monotonic() + deadline
    while True:
        if condition():
            return
        if time.monotonic() > ends:
            raise AssertionError(f"{what}: still not true after {deadline:.0f} s")
        await asyncio.sleep(0.02)


async def until_async(
    condition: Callable[[], Awaitable[bool]], what: str, deadline: float = 30.0
) -> None:
    """As `until`, for a condition that must ask something (the database) to know."""
    ends = time.monotonic() + deadline
    while True:
        if await condition():
            return
        if time.monotonic() > ends:
            raise AssertionError(f"{what}: still not true after {deadline:.0f} s")
        await asyncio.sleep(0.02)
