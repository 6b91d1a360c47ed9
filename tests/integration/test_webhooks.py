"""Webhooks end to end through a real tower, real PostgreSQL and a real HTTP receiver.

The receiver listens on loopback, so these towers run with WEBHOOK_ALLOW_PRIVATE=true
(except where the send-time SSRF refusal is the point). Signatures are checked with the
`standardwebhooks` package, the reference verifier, not with our own code.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from tests.support.live import client_for, live_tower
from tests.support.receiver import HOLD, Receiver, receiver
from tests.support.towers import insert_job
from tower.settings import Settings
from tower.webhooks.queries import UNANSWERED
from tower.webhooks.service import MAX_DELIVERIES_PER_JOB
from tower.webhooks.signing import new_secret

SECRET = new_secret()
T = TypeVar("T")


def webhook_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "tower_runner": "simulated",
        "webhook_secret": SECRET,
        "webhook_allow_private": True,
        "webhook_retry_base": 0.05,
        "webhook_retry_max": 0.2,
        "webhook_timeout": 5,
        "poll_interval": 0.5,
    }
    return Settings(**(values | overrides))


@pytest.fixture
async def tower(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with live_tower(webhook_settings(database_url)) as url, client_for(url) as client:
        yield client


async def submit(client: httpx.AsyncClient, prompt: str, webhook_url: str | None) -> str:
    body: dict[str, Any] = {"agent_id": "hooks", "engine": "claude-code", "prompt": prompt}
    if webhook_url is not None:
        body["webhook_url"] = webhook_url
    response = await client.post("/jobs", json=body)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id


async def finished(client: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    response = await client.get(f"/jobs/{job_id}/wait", params={"timeout": 60})
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    return job


async def eventually(probe: Callable[[], Awaitable[T | None]], within: float = 30) -> T:
    """Re-read state until `probe` returns something (a bounded liveness check)."""
    deadline = asyncio.get_running_loop().time() + within
    while (value := await probe()) is None:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(0.05)
    return value


async def settled_deliveries(
    client: httpx.AsyncClient, receiver: Receiver, job_id: str, count: int
) -> list[dict[str, Any]]:
    """The job's deliveries once `count` requests arrived and every answer is recorded."""
    await receiver.wait_for(count)

    async def recorded() -> list[dict[str, Any]] | None:
        job = (await client.get(f"/jobs/{job_id}")).json()
        deliveries: list[dict[str, Any]] = job["webhook_deliveries"]
        attempts = [a for d in deliveries for a in d["attempts"]]
        done = len(attempts) >= count and all(a["error"] != UNANSWERED for a in attempts)
        return deliveries if done else None

    return await eventually(recorded)


async def test_delivery_is_signed_per_standard_webhooks(tower: httpx.AsyncClient) -> None:
    async with receiver([200]) as hooks:
        job_id = await submit(tower, "print hello", hooks.url)
        await finished(tower, job_id)
        (request,) = await hooks.wait_for(1)
        deliveries = await settled_deliveries(tower, hooks, job_id, 1)
    event = Webhook(SECRET).verify(request.body, request.headers)
    assert event["type"] == "job.completed"
    assert event["data"]["job_id"] == job_id
    assert event["data"]["status"] == "completed"
    assert event["data"]["result"] == "hello"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["webhook-id"].startswith("msg_")
    (delivery,) = deliveries
    assert delivery["delivery_id"] == request.headers["webhook-id"]
    assert delivery["event_type"] == "job.completed"
    assert delivery["status"] == "delivered"
    (attempt,) = delivery["attempts"]
    assert attempt["attempt"] == 1 and attempt["status_code"] == 200
    assert attempt["error"] is None and attempt["duration_ms"] >= 0


async def test_a_tampered_body_fails_verification(tower: httpx.AsyncClient) -> None:
    async with receiver([200]) as hooks:
        await submit(tower, "print hello", hooks.url)
        (request,) = await hooks.wait_for(1)
    tampered = request.body.replace(b"hello", b"HELLO")
    with pytest.raises(WebhookVerificationError, match="signature"):
        Webhook(SECRET).verify(tampered, request.headers)
    with pytest.raises(WebhookVerificationError, match="signature"):
        Webhook(new_secret()).verify(request.body, request.headers)


async def test_failed_and_cancelled_jobs_send_their_event(tower: httpx.AsyncClient) -> None:
    async with receiver([]) as hooks:
        failed = await submit(tower, "print boom\nexit 3", hooks.url)
        cancelled = await submit(tower, "sleep 60", hooks.url)
        response = await tower.delete(f"/jobs/{cancelled}")
        assert response.status_code == 200
        requests = await hooks.wait_for(2)
    events = {
        e["data"]["job_id"]: e
        for e in (Webhook(SECRET).verify(r.body, r.headers) for r in requests)
    }
    assert events[failed]["type"] == "job.failed"
    assert events[failed]["data"]["exit_code"] == 3
    assert events[failed]["data"]["failure_reason"] == "error"
    assert events[cancelled]["type"] == "job.cancelled"


async def test_receiver_failing_twice_gets_it_on_the_third_attempt_same_id(
    tower: httpx.AsyncClient,
) -> None:
    async with receiver([500, 503, 200]) as hooks:
        job_id = await submit(tower, "print third time lucky", hooks.url)
        deliveries = await settled_deliveries(tower, hooks, job_id, 3)
        requests = hooks.requests
    assert len(requests) == 3
    assert len({r.headers["webhook-id"] for r in requests}) == 1
    for request in requests:  # each attempt signed afresh, each valid
        Webhook(SECRET).verify(request.body, request.headers)
    assert len({r.body for r in requests}) == 1
    (delivery,) = deliveries
    assert delivery["status"] == "delivered"
    codes = [(a["attempt"], a["status_code"]) for a in delivery["attempts"]]
    assert codes == [(1, 500), (2, 503), (3, 200)]
    assert [a["error"] for a in delivery["attempts"]] == ["HTTP 500", "HTTP 503", None]


async def test_410_stops_retries(tower: httpx.AsyncClient) -> None:
    async with receiver([410], then=200) as hooks:
        job_id = await submit(tower, "print gone", hooks.url)
        (delivery,) = await settled_deliveries(tower, hooks, job_id, 1)
    assert delivery["status"] == "stopped"
    assert [a["status_code"] for a in delivery["attempts"]] == [410]
    assert delivery["next_attempt_at"] is None  # nothing left to send
    assert len(hooks.requests) == 1


async def test_attempts_run_out(database_url: str) -> None:
    settings = webhook_settings(database_url, webhook_max_attempts=3)
    async with (
        receiver([], then=500) as hooks,
        live_tower(settings) as url,
        client_for(url) as client,
    ):
        job_id = await submit(client, "print never", hooks.url)
        (delivery,) = await settled_deliveries(client, hooks, job_id, 3)
    assert delivery["status"] == "failed"
    assert [a["attempt"] for a in delivery["attempts"]] == [1, 2, 3]
    assert len(hooks.requests) == 3


async def test_jobs_without_webhook_url_queue_nothing(
    tower: httpx.AsyncClient, database_url: str
) -> None:
    job_id = await submit(tower, "print quiet", None)
    job = await finished(tower, job_id)
    assert job["webhook_deliveries"] == []
    connection = await asyncpg.connect(database_url)
    try:
        assert await connection.fetchval("SELECT count(*) FROM webhook_deliveries") == 0
    finally:
        await connection.close()


async def test_redeliver_sends_a_new_delivery(tower: httpx.AsyncClient) -> None:
    async with receiver([200, 200]) as hooks:
        job_id = await submit(tower, "print again", hooks.url)
        await settled_deliveries(tower, hooks, job_id, 1)
        response = await tower.post(f"/jobs/{job_id}/webhook/redeliver")
        assert response.status_code == 202, response.text
        body = response.json()
        deliveries = await settled_deliveries(tower, hooks, job_id, 2)
        first, second = hooks.requests
    assert body["job_id"] == job_id and body["status"] == "pending"
    assert second.headers["webhook-id"] == body["delivery_id"] != first.headers["webhook-id"]
    assert json.loads(second.body)["data"] == json.loads(first.body)["data"]
    assert [d["status"] for d in deliveries] == ["delivered", "delivered"]


async def test_redeliver_refusals(tower: httpx.AsyncClient) -> None:
    unknown = await tower.post("/jobs/hooks-0123456789ab/webhook/redeliver")
    assert unknown.status_code == 404
    malformed = await tower.post("/jobs/not a job/webhook/redeliver")
    assert malformed.status_code == 404
    quiet = await submit(tower, "print quiet", None)
    await finished(tower, quiet)
    no_url = await tower.post(f"/jobs/{quiet}/webhook/redeliver")
    assert no_url.status_code == 409
    assert "no webhook_url" in no_url.json()["detail"]
    async with receiver([200]) as hooks:
        running = await submit(tower, "sleep 60", hooks.url)
        early = await tower.post(f"/jobs/{running}/webhook/redeliver")
        await tower.delete(f"/jobs/{running}")
        await hooks.wait_for(1)
    assert early.status_code == 409
    assert "still" in early.json()["detail"]


async def test_redeliver_is_bounded_per_job(tower: httpx.AsyncClient) -> None:
    # More concurrent redeliveries than the bound allows: exactly enough succeed to
    # reach it (the first delivery counts), the rest are refused, and the job's record
    # stops growing.
    limit = MAX_DELIVERIES_PER_JOB
    async with receiver([], then=200) as hooks:
        job_id = await submit(tower, "print bounded", hooks.url)
        await settled_deliveries(tower, hooks, job_id, 1)
        path = f"/jobs/{job_id}/webhook/redeliver"
        answers = await asyncio.gather(*(tower.post(path) for _ in range(limit + 5)))
        codes = sorted(answer.status_code for answer in answers)
        deliveries = await settled_deliveries(tower, hooks, job_id, limit)
        again = await tower.post(path)
    assert codes == [202] * (limit - 1) + [409] * 6
    assert again.status_code == 409
    assert f"already has {limit} webhook deliveries" in again.json()["detail"]
    assert [d["status"] for d in deliveries] == ["delivered"] * limit


async def test_redeliver_needs_the_api_key(database_url: str) -> None:
    settings = webhook_settings(database_url, tower_api_key="k3y")
    async with live_tower(settings) as url, client_for(url) as client:
        response = await client.post("/jobs/hooks-0123456789ab/webhook/redeliver")
    assert response.status_code == 401


async def test_private_targets_are_refused_at_submit_unless_allowed(database_url: str) -> None:
    settings = webhook_settings(database_url, webhook_allow_private=False)
    async with live_tower(settings) as url, client_for(url) as client:
        response = await client.post(
            "/jobs",
            json={"agent_id": "a", "engine": "claude-code", "webhook_url": "http://127.0.0.1/h"},
        )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "webhook_url"]


async def test_ssrf_is_checked_again_at_send_time(database_url: str) -> None:
    # A job whose URL was accepted earlier (say, while WEBHOOK_ALLOW_PRIVATE was on, or a
    # name that resolved to a public address then) is refused when the check fails now.
    settings = webhook_settings(database_url, webhook_allow_private=False)
    async with (
        receiver([200]) as hooks,
        live_tower(settings) as url,
        client_for(url) as client,
    ):
        connection = await asyncpg.connect(database_url)
        try:
            job_id = await insert_job(connection, "print secret", webhook_url=hooks.url)
        finally:
            await connection.close()
        await finished(client, job_id)
        delivery = await _settled_without_receiver(client, job_id)
    assert delivery["status"] == "failed"
    (attempt,) = delivery["attempts"]
    assert attempt["status_code"] is None
    assert attempt["error"].startswith("refused:")
    assert "127.0.0.1" in attempt["error"]
    assert hooks.requests == []


async def _settled_without_receiver(client: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    async def settled() -> dict[str, Any] | None:
        (delivery,) = (await client.get(f"/jobs/{job_id}")).json()["webhook_deliveries"]
        return None if delivery["status"] == "pending" else dict(delivery)

    return await eventually(settled)


async def test_a_held_request_times_out_and_is_retried(database_url: str) -> None:
    settings = webhook_settings(database_url, webhook_timeout=1)
    async with (
        receiver([HOLD, 200]) as hooks,
        live_tower(settings) as url,
        client_for(url) as client,
    ):
        job_id = await submit(client, "print slow receiver", hooks.url)
        (delivery,) = await settled_deliveries(client, hooks, job_id, 2)
    first, second = delivery["attempts"]
    assert first["status_code"] is None and "no answer within 1s" in first["error"]
    assert second["status_code"] == 200
    assert delivery["status"] == "delivered"


def cli_webhook_secret(database_url: str) -> str:
    environment = {**os.environ, "DATABASE_URL": database_url}
    environment.pop("WEBHOOK_SECRET", None)
    done = subprocess.run(
        [sys.executable, "-m", "tower.cli", "webhook-secret"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


async def test_without_a_secret_one_is_generated_kept_and_printable(database_url: str) -> None:
    settings = webhook_settings(database_url, webhook_secret="")
    async with (
        receiver([200]) as hooks,
        live_tower(settings) as url,
        client_for(url) as client,
    ):
        await submit(client, "print unconfigured", hooks.url)
        (request,) = await hooks.wait_for(1)
    printed = await asyncio.to_thread(cli_webhook_secret, database_url)
    assert printed.startswith("whsec_")
    assert Webhook(printed).verify(request.body, request.headers)["type"] == "job.completed"
    assert await asyncio.to_thread(cli_webhook_secret, database_url) == printed
