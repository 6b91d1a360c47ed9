"""Engine output that could not be stored never costs a result: non-finite usage figures
are dropped, token lines that do not parse are ignored, and JSON for the database refuses
NaN and Infinity at the encoder."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest

from tests.unit.test_execution_outcome import CLAUDE_JSON, outcome, worker_output
from tower.db.group_commit import GroupCommit
from tower.db.pool import encode_json
from tower.db.writes import write_with_retry
from tower.execution.engine_output import read_aider, read_json, read_jsonl

NON_FINITE = ["Infinity", "-Infinity", "NaN", "1e999"]


def _finite_everywhere(usage: dict[str, Any] | None) -> bool:
    values = (usage or {}).values()
    return all(not isinstance(value, float) or math.isfinite(value) for value in values)


@pytest.mark.parametrize("cost", NON_FINITE)
def test_a_non_finite_claude_cost_is_dropped_and_the_tokens_kept(cost: str) -> None:
    text = json.dumps(CLAUDE_JSON).replace("0.0123", cost)

    report = read_json(text)

    assert report is not None
    assert report.usage == {"input_tokens": 120, "output_tokens": 45, "cost_usd": None}


@pytest.mark.parametrize("cost", NON_FINITE)
def test_a_job_whose_engine_reports_a_non_finite_cost_completes_with_finite_usage(
    cost: str,
) -> None:
    stdout = json.dumps(CLAUDE_JSON).replace("0.0123", cost).encode()

    got = outcome(worker_output(stdout))

    assert (got.succeeded, got.result) == (True, "All tests pass.")
    assert got.usage == {"input_tokens": 120, "output_tokens": 45, "cost_usd": None}
    encode_json(got.usage)  # storable


def test_a_huge_integer_cost_is_dropped() -> None:
    text = json.dumps({**CLAUDE_JSON, "total_cost_usd": 10**400})

    report = read_json(text)

    assert report is not None and report.usage is not None
    assert report.usage["cost_usd"] is None


def test_non_finite_opencode_costs_are_dropped_and_finite_ones_that_overflow_too() -> None:
    nan = '{"type": "step_finish", "part": {"tokens": {"input": 5, "output": 2}, "cost": NaN}}'
    report = read_jsonl(nan)
    assert report is not None
    assert report.usage == {"input_tokens": 5, "output_tokens": 2, "cost_usd": None}
    big = '{"type": "step_finish", "part": {"cost": 1.7e308}}'
    summed = read_jsonl(big + "\n" + big)
    assert summed is not None and _finite_everywhere(summed.usage)


def test_an_aider_line_that_does_not_parse_is_ignored() -> None:
    text = (
        "Tokens: 1.2.3 sent, 4 received.\n"
        "Tokens: 2.5k sent, 120 received. Cost: $0.01 message, $0.04 session.\n"
    )

    assert read_aider(text) == {"input_tokens": 2500, "output_tokens": 120, "cost_usd": 0.04}


def test_an_aider_run_with_only_unparsable_lines_still_completes() -> None:
    got = outcome(worker_output(b"Tokens: 1.2.3 sent, 4 received.\n"), engine_name="aider")

    assert got.succeeded and got.usage is None


def test_aider_counts_too_large_for_a_float_are_ignored() -> None:
    text = f"Tokens: {'9' * 400}k sent, 4 received.\nTokens: 10 sent, 2 received.\n"

    assert read_aider(text) == {"input_tokens": 10, "output_tokens": 2, "cost_usd": None}


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_json_for_the_database_refuses_non_finite_numbers(value: float) -> None:
    with pytest.raises(ValueError):
        encode_json({"cost_usd": value})
    assert encode_json({"cost_usd": 1.5}) == '{"cost_usd": 1.5}'


# --- writes: a refused statement is not retried -------------------------------------------


async def test_write_with_retry_raises_a_refused_statement_at_once() -> None:
    calls = 0

    async def refused() -> bool:
        nonlocal calls
        calls += 1
        raise asyncpg.DataError("invalid input for query argument $8")

    with pytest.raises(asyncpg.DataError):
        await write_with_retry(refused, deadline=time.monotonic() + 2.0)

    assert calls == 1


async def test_write_with_retry_still_retries_a_lost_connection() -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionResetError("gone")
        return "written"

    assert await write_with_retry(flaky, deadline=float("inf")) == "written"
    assert calls == 3


class _Pool:
    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[None]:
        yield None


async def test_a_batch_that_lost_its_connection_fails_every_write_at_once() -> None:
    batches: list[list[int]] = []

    async def write(_connection: Any, items: list[int]) -> list[int]:
        batches.append(items)
        await asyncio.sleep(0)
        raise ConnectionResetError("gone")

    commit: GroupCommit[int, int] = GroupCommit(_Pool(), write, "test")
    outcomes = await asyncio.gather(*(commit.write(n) for n in range(3)), return_exceptions=True)

    assert all(isinstance(error, ConnectionResetError) for error in outcomes)
    # One attempt for all three: an outage is not met again by each write alone.
    assert batches == [[0, 1, 2]]
