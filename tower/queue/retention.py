"""Placeholder; filled in by its owner."""

from typing import Any


class Retention:
    def __init__(self, *args: Any) -> None:
        self.args = args

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None
