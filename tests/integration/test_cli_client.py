"""The client commands, as real processes, against a real tower over HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.cli import Ran
from tests.support.cli import parpaing as run_parpaing
from tests.support.live import live_tower
from tower.cli.client import parse_var
from tower.cli.output import CliError
from tower.settings import Settings

API_KEY = "cli-secret"


@pytest.fixture
async def tower(database_url: str) -> AsyncIterator[str]:
    settings = Settings(database_url=database_url, tower_runner="simulated", tower_api_key=API_KEY)
    async with live_tower(settings) as url:
        yield url


async def parpaing(url: str, *args: str, api_key: str = API_KEY) -> Ran:
    return await run_parpaing(url, *args, api_key=api_key)


def submitting(*args: str) -> tuple[str, ...]:
    return ("submit", "--agent", "cli", "--engine", "claude-code", *args)


def finished_job(ran: Ran) -> dict[str, object]:
    """`submit --wait` prints the job id, then the finished job as JSON."""
    first, _, rest = ran.stdout.partition("\n")
    job: dict[str, object] = json.loads(rest)
    assert job["job_id"] == first
    return job


async def test_submit_and_wait_prints_the_finished_job(tower: str) -> None:
    ran = await parpaing(tower, *submitting("--prompt", "print hi", "--wait"))
    assert ran.code == 0, ran.stderr
    job = finished_job(ran)
    assert job["status"] == "completed"
    assert job["result"] == "hi"


async def test_submit_without_engine_runs_the_profiles(tower: str) -> None:
    ran = await parpaing(tower, "submit", "--agent", "cli", "--prompt", "print hi", "--wait")
    assert ran.code == 0, ran.stderr
    assert finished_job(ran)["engine"] == "claude-code"  # the default profile's


async def test_prompt_file_then_wait_logs_and_list(tower: str, tmp_path: Path) -> None:
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("print from a file\nprint second line\n")
    submitted = await parpaing(tower, *submitting("--prompt-file", str(prompt)))
    assert submitted.code == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    waited = await parpaing(tower, "wait", job_id, "--timeout", "60")
    logs = await parpaing(tower, "logs", job_id)
    listed = await parpaing(tower, "jobs", "--status", "completed")
    assert waited.code == 0 and json.loads(waited.stdout)["status"] == "completed"
    assert logs.code == 0 and logs.stdout == "from a file\nsecond line\n"
    assert job_id in listed.stdout and "completed" in listed.stdout
    assert "1 of 1 jobs" in listed.stderr


async def test_logs_follows_a_job_from_pending_to_its_end(tower: str) -> None:
    script = "print one\nwarn to stderr\nsleep 0.5\nprint two"
    submitted = await parpaing(tower, *submitting("--prompt", script))
    logs = await parpaing(tower, "logs", submitted.stdout.strip())
    assert (logs.code, logs.stdout, logs.stderr) == (0, "one\ntwo\n", "to stderr\n")


async def test_a_failed_job_exits_non_zero_and_logs_its_error(tower: str) -> None:
    ran = await parpaing(tower, *submitting("--prompt", "print boom\nexit 3", "--wait"))
    job = finished_job(ran)
    logs = await parpaing(tower, "logs", str(job["job_id"]))
    assert ran.code == 1 and job["status"] == "failed"
    assert logs.code == 1 and "boom" in logs.stderr


async def test_cancel_then_cancel_again_is_a_one_line_error(tower: str) -> None:
    submitted = await parpaing(tower, *submitting("--prompt", "sleep 60"))
    job_id = submitted.stdout.strip()
    first = await parpaing(tower, "cancel", job_id)
    second = await parpaing(tower, "cancel", job_id)
    assert first.code == 0 and first.stdout.strip() == f"{job_id} cancelled"
    assert second.code == 1
    assert second.stderr.strip() == "parpaing: HTTP 409: Job already cancelled"


async def test_wait_gives_up_at_its_timeout(tower: str) -> None:
    submitted = await parpaing(tower, *submitting("--prompt", "sleep 60"))
    job_id = submitted.stdout.strip()
    waited = await parpaing(tower, "wait", job_id, "--timeout", "1")
    await parpaing(tower, "cancel", job_id)
    assert waited.code == 1
    assert "HTTP 408" in waited.stderr and job_id in waited.stderr


async def test_errors_are_one_line_and_name_the_problem(tower: str) -> None:
    bad_key = await parpaing(tower, "jobs", api_key="wrong")
    invalid = await parpaing(tower, "submit", "--agent", "no spaces", "--engine", "claude-code")
    missing = await parpaing(tower, "logs", "cli-000000000000")
    nowhere = await parpaing("http://127.0.0.1:9", "jobs")
    for ran in (bad_key, invalid, missing, nowhere):
        assert ran.code == 1
        assert len(ran.stderr.strip().splitlines()) == 1, ran.stderr
        assert "Traceback" not in ran.stderr
    assert "HTTP 401" in bad_key.stderr
    assert "HTTP 422" in invalid.stderr and "agent_id" in invalid.stderr
    assert "HTTP 404" in missing.stderr
    assert "cannot reach tower" in nowhere.stderr


def test_vars_are_strings_or_json() -> None:
    assert parse_var("name=a=b") == ("name", "a=b")
    assert parse_var("count:=3") == ("count", 3)
    assert parse_var("flags:=[true]") == ("flags", [True])
    for bad in ("novalue", "=x", "n:=not-json"):
        with pytest.raises(CliError):
            parse_var(bad)
