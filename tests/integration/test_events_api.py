"""Job events through the real API: a live tower, real PostgreSQL, the simulated runner
(whose `print` lines are the job's output, `sleep` keeps it running)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.support.live import client_for, live_tower
from tests.support.sse import KEEPALIVE, Event, collect, events, only_events
from tower.execution.simulated import SimulatedRunner
from tower.settings import Settings

DEADLINE = 30.0  # a bound on waiting for an event, never an expectation of speed


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        database_url=database_url,
        tower_runner="simulated",
        poll_interval=0.2,
        events_keepalive_seconds=1,
    )
    async with live_tower(settings, SimulatedRunner()) as url, client_for(url) as client:
        yield client


async def submit(client: httpx.AsyncClient, prompt: str, **fields: Any) -> str:
    body = {"agent_id": "ev", "engine": "claude-code", "prompt": prompt, **fields}
    response = await client.post("/jobs", json=body)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id


def states(stream: list[Event]) -> list[str]:
    return [event.data["status"] for event in stream if event.name == "state"]


def log_text(stream: list[Event], name: str = "stdout") -> str:
    return "".join(e.data["text"] for e in stream if e.name == "log" and e.data["stream"] == name)


async def test_a_completed_job_streams_its_states_and_output_then_closes(
    client: httpx.AsyncClient,
) -> None:
    job_id = await submit(client, "print hello\nwarn careful\nprint world")

    async with asyncio.timeout(DEADLINE):
        stream = await collect(client, f"/jobs/{job_id}/events")

    assert states(stream) == ["pending", "running", "completed"]
    assert [event.id for event in stream] == list(range(1, len(stream) + 1))
    assert log_text(stream) == "hello\nworld\n"
    assert log_text(stream, "stderr") == "careful\n"
    first, last = stream[0], stream[-1]
    assert first.data == {
        "job_id": job_id,
        "seq": 1,
        "status": "pending",
        "at": first.data["at"],
        "attempt": 0,
        "failure_reason": None,
        "exit_code": None,
    }
    assert (last.data["status"], last.data["exit_code"], last.data["attempt"]) == (
        "completed",
        0,
        1,
    )
    log = next(event for event in stream if event.name == "log")
    assert set(log.data) == {"job_id", "seq", "stream", "text", "at"}


async def test_a_failed_job_ends_with_its_reason(client: httpx.AsyncClient) -> None:
    job_id = await submit(client, "print partial\nfail timeout")

    async with asyncio.timeout(DEADLINE):
        stream = await collect(client, f"/jobs/{job_id}/events")

    assert states(stream) == ["pending", "running", "failed"]
    assert stream[-1].data["failure_reason"] == "timeout"


async def test_a_cancelled_job_closes_its_stream(client: httpx.AsyncClient) -> None:
    job_id = await submit(client, "print started\nsleep 60")
    async with asyncio.timeout(DEADLINE), client.stream("GET", f"/jobs/{job_id}/events") as reply:
        seen: list[Event] = []
        async for event in only_events(reply):
            seen.append(event)
            if event.name == "log":  # it runs: cancel it now
                assert (await client.delete(f"/jobs/{job_id}")).status_code == 200
    assert states(seen) == ["pending", "running", "cancelled"]
    assert seen[-1].data["status"] == "cancelled"


async def test_a_finished_job_replays_from_any_point_and_closes(client: httpx.AsyncClient) -> None:
    job_id = await submit(client, "\n".join(f"print line {n}\nsleep 0.01" for n in range(20)))
    async with asyncio.timeout(DEADLINE):
        whole = await collect(client, f"/jobs/{job_id}/events")
        for after in range(len(whole) + 1):
            by_header = await collect(
                client, f"/jobs/{job_id}/events", headers={"Last-Event-ID": str(after)}
            )
            by_query = await collect(client, f"/jobs/{job_id}/events?last_event_id={after}")
            assert by_header == by_query == whole[after:]


async def test_the_header_wins_over_the_query(client: httpx.AsyncClient) -> None:
    job_id = await submit(client, "print a\nprint b")
    async with asyncio.timeout(DEADLINE):
        whole = await collect(client, f"/jobs/{job_id}/events")
        resumed = await collect(
            client, f"/jobs/{job_id}/events?last_event_id=1", headers={"Last-Event-ID": "2"}
        )
    assert resumed == whole[2:]


async def test_a_client_that_drops_mid_stream_resumes_without_gap_or_duplicate(
    client: httpx.AsyncClient,
) -> None:
    lines = [f"line {n}" for n in range(60)]
    job_id = await submit(client, "\n".join(f"print {line}\nsleep 0.02" for line in lines))
    received: list[Event] = []
    async with asyncio.timeout(DEADLINE):
        while not received or received[-1].data.get("status") != "completed":
            last = {"Last-Event-ID": str(received[-1].id)} if received else {}
            async with client.stream("GET", f"/jobs/{job_id}/events", headers=last) as reply:
                async for event in only_events(reply):
                    received.append(event)
                    if len(received) % 4 == 0:
                        break  # drop the connection mid-stream
    assert [event.id for event in received] == list(range(1, len(received) + 1))
    assert log_text(received) == "".join(f"{line}\n" for line in lines)


async def test_unknown_job_is_404_and_bad_ids_are_422(client: httpx.AsyncClient) -> None:
    assert (await client.get("/jobs/nobody-0123456789ab/events")).status_code == 404
    assert (await client.get("/jobs/not a job/events")).status_code == 404
    job_id = await submit(client, "")
    for headers, query in (({"Last-Event-ID": "x"}, ""), ({}, "?last_event_id=-1")):
        reply = await client.get(f"/jobs/{job_id}/events{query}", headers=headers)
        assert reply.status_code == 422, reply.text
        assert "last" in reply.text.lower()
    reply = await client.get("/events", headers={"Last-Event-ID": "1e3"})
    assert reply.status_code == 422, reply.text


async def test_a_quiet_stream_sends_keepalives(client: httpx.AsyncClient) -> None:
    job_id = await submit(client, "sleep 60")
    async with asyncio.timeout(DEADLINE), client.stream("GET", f"/jobs/{job_id}/events") as reply:
        assert reply.headers["content-type"].startswith("text/event-stream")
        assert reply.headers["cache-control"] == "no-store"
        async for item in events(reply):
            if item == KEEPALIVE:
                break
    await client.delete(f"/jobs/{job_id}")


async def test_all_jobs_stream_sees_every_state_change(client: httpx.AsyncClient) -> None:
    wanted = ["pending", "running", "completed"]
    async with asyncio.timeout(DEADLINE), client.stream("GET", "/events") as reply:
        jobs = [await submit(client, f"print {n}") for n in range(5)]
        cancelled = await submit(client, "sleep 60")
        seen: dict[str, list[str]] = {}
        ids: list[int] = []
        async for event in only_events(reply):
            assert event.name == "state"
            assert set(event.data) == {
                "job_id", "seq", "status", "at", "agent_id", "engine", "profile", "attempt",
                "failure_reason", "exit_code",
            }  # fmt: skip
            ids.append(event.id)
            seen.setdefault(event.data["job_id"], []).append(event.data["status"])
            if seen.get(cancelled) == ["pending", "running"]:
                await client.delete(f"/jobs/{cancelled}")
            if (
                all(seen.get(job) == wanted for job in jobs)
                and cancelled in seen
                and (seen[cancelled][-1] == "cancelled")
            ):
                break
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert seen[cancelled] == ["pending", "running", "cancelled"]
