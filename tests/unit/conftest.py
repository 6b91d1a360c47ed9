from __future__ import annotations

from collections.abc import Iterator

import pytest

from tower.configs import renderer


@pytest.fixture(scope="session", autouse=True)
def _renderers_closed() -> Iterator[None]:
    """Templates render in renderer processes, started on first use and closed with the
    tower's config store; unit tests render without a store, so they are closed here,
    before the session's check for processes left running."""
    yield
    renderer.close()
