"""The job request's text limits count UTF-8 bytes, not characters (a '€' is three)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tower.jobs import schemas
from tower.jobs.schemas import SYSTEM_PROMPT_MAX, VAR_VALUE_MAX, JobRequest, utf8_length


def _locs(**fields: object) -> list[tuple[str | int, ...]]:
    with pytest.raises(ValidationError) as caught:
        JobRequest.model_validate({"agent_id": "a", "engine": "claude-code", **fields})
    return [error["loc"] for error in caught.value.errors()]


def test_utf8_length_counts_bytes_a_slice_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schemas, "_COUNT_SLICE", 4)
    assert utf8_length("abc", 10) == 3
    assert utf8_length("€" * 3 + "a", 100) == 10
    assert utf8_length("😀" * 5, 100) == 20
    # It stops counting once past the limit.
    assert 6 < utf8_length("€" * 1000, 6) < 3000


def test_system_prompt_within_the_characters_but_over_the_bytes_is_refused() -> None:
    fits = "€" * (SYSTEM_PROMPT_MAX // 3)
    assert JobRequest(agent_id="a", engine="claude-code", system_prompt=fits).system_prompt
    assert _locs(system_prompt=fits + "€") == [("system_prompt",)]


def test_a_var_value_over_its_bytes_is_refused() -> None:
    value = "€" * (VAR_VALUE_MAX // 3 + 1)
    assert _locs(prompt_vars={"v": value}) == [("prompt_vars", "v")]
