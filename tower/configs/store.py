"""Placeholder with the contract the rest of tower relies on; the configs owner fills it in."""

from __future__ import annotations

from typing import Any


class ConfigStore:
    """Profiles, engines and templates, cached per replica and refreshed on NOTIFY."""

    def __init__(self, pool: Any, hub: Any) -> None:
        self.pool = pool
        self.hub = hub

    async def load(self) -> None:
        """Seed the shipped defaults into an empty configs table, then fill the cache."""

    def profile_names(self) -> list[str]:
        return ["default"]

    def engine_names(self) -> list[str]:
        return ["claude-code"]

    def validate_job(self, profile: str, engine: str, prompt_vars: dict[str, Any]) -> None:
        """Raise tower.errors.Invalid(message, field=...) naming the offending field:
        "profile", "engine" or "prompt_vars.<name>"."""
