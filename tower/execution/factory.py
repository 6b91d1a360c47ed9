"""Placeholder; filled in by its owner."""

from tower.execution.runner import Runner
from tower.settings import Settings


def build_runner(settings: Settings) -> Runner:
    raise NotImplementedError
