"""Placeholder; filled in by its owner."""

from __future__ import annotations

from typing import Any


class ConfigStore:
    def __init__(self, pool: Any, hub: Any) -> None:
        self.pool = pool
        self.hub = hub

    async def load(self) -> None:
        return None
