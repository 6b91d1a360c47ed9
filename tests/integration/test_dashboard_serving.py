"""The dashboard's files at /ui (from a checkout and from a built wheel), and /stats."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.live import client_for, live_tower
from tower.execution.simulated import SimulatedRunner
from tower.settings import Settings
from tower.web.dashboard import CONTENT_SECURITY_POLICY

API_KEY = "dashboard-key"
REPO = Path(__file__).resolve().parents[2]
UI_FILES = sorted(
    path.relative_to(REPO / "ui").as_posix() for path in (REPO / "ui").rglob("*") if path.is_file()
)


@pytest.fixture
async def base_url(database_url: str) -> AsyncIterator[str]:
    settings = Settings(database_url=database_url, tower_runner="simulated", tower_api_key=API_KEY)
    async with live_tower(settings, SimulatedRunner()) as url:
        yield url


async def test_ui_without_slash_redirects_and_index_is_served_with_a_strict_policy(
    base_url: str,
) -> None:
    async with client_for(base_url) as anonymous:
        redirect = await anonymous.get("/ui", follow_redirects=False)
        assert redirect.status_code in (307, 308)
        assert redirect.headers["location"].endswith("/ui/")
        page = await anonymous.get("/ui/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY
    assert page.headers["x-frame-options"] == "DENY"
    assert '<script type="module" src="js/main.js">' in page.text


@pytest.mark.parametrize("name", ["js/main.js", "app.css", "favicon.svg"])
async def test_assets_have_their_media_types(base_url: str, name: str) -> None:
    expected = {"js": "javascript", "css": "text/css", "svg": "image/svg+xml"}[name.rsplit(".")[-1]]
    async with client_for(base_url) as anonymous:
        response = await anonymous.get(f"/ui/{name}")
    assert response.status_code == 200
    assert expected in response.headers["content-type"]


@pytest.mark.parametrize("path", ["/ui/../tower/app.py", "/ui/%2e%2e/tower/app.py", "/ui/nope.js"])
async def test_nothing_outside_ui_is_served(base_url: str, path: str) -> None:
    async with httpx.AsyncClient(base_url=base_url) as anonymous:
        response = await anonymous.get(path)
    assert response.status_code == 404


# --- /stats ---------------------------------------------------------------------------


async def test_stats_need_the_key(base_url: str) -> None:
    async with client_for(base_url) as anonymous:
        for path in ("/stats/jobs", "/stats/activity"):
            assert (await anonymous.get(path)).status_code == 401


async def test_job_counts_by_status_and_agent(base_url: str) -> None:
    async with client_for(base_url, API_KEY) as client:
        ids = []
        for agent, prompt in [("a1", "print done"), ("a1", "sleep 3600"), ("a2", "exit 3")]:
            response = await client.post(
                "/jobs", json={"agent_id": agent, "engine": "claude-code", "prompt": prompt}
            )
            ids.append(response.json()["job_id"])
        for job_id in (ids[0], ids[2]):
            assert (await client.get(f"/jobs/{job_id}/wait")).status_code == 200
        await client.delete(f"/jobs/{ids[1]}")
        everyone = (await client.get("/stats/jobs")).json()
        one = (await client.get("/stats/jobs", params={"agent_id": "a1"})).json()
        bad = await client.get("/stats/jobs", params={"agent_id": "no spaces"})
    assert everyone["agent_id"] is None
    assert everyone["by_status"] == {
        "pending": 0,
        "running": 0,
        "completed": 1,
        "failed": 1,
        "cancelled": 1,
    }
    assert everyone["total"] == 3
    assert one["by_status"] == {
        "pending": 0,
        "running": 0,
        "completed": 1,
        "failed": 0,
        "cancelled": 1,
    }
    assert one["total"] == 2
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["query", "agent_id"]


async def test_activity_counts_this_minute(base_url: str) -> None:
    async with client_for(base_url, API_KEY) as client:
        for prompt in ("print one", "exit 1"):
            response = await client.post(
                "/jobs", json={"agent_id": "ops", "engine": "claude-code", "prompt": prompt}
            )
            await client.get(f"/jobs/{response.json()['job_id']}/wait")
        activity = (await client.get("/stats/activity", params={"minutes": 5})).json()
        too_many = await client.get("/stats/activity", params={"minutes": 100000})
    minutes = activity["minutes"]
    assert len(minutes) == 5
    assert [m["minute"] for m in minutes] == sorted(m["minute"] for m in minutes)
    # The jobs may straddle a minute boundary: add the minutes up.
    assert sum(m["submitted"] for m in minutes) == 2
    assert sum(m["completed"] for m in minutes) == 1
    assert sum(m["failed"] for m in minutes) == 1
    assert any(m["max_duration_ms"] is not None for m in minutes)
    assert activity["queue"] == {"depth": 0, "oldest_age_seconds": 0.0}
    assert activity["pool"] == {"starting": 0, "ready": 0, "busy": 0}
    assert activity["jobs_by_status"]["completed"] == 1
    assert too_many.status_code == 422


# --- packaging --------------------------------------------------------------------------


def test_a_built_wheel_carries_the_dashboard(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(REPO)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("parpaing-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert {f"tower/ui/{name}" for name in UI_FILES} <= names
    assert "tower/web/dashboard.py" in names


async def test_last_event_id_starts_the_stream_after_what_was_counted(base_url: str) -> None:
    async with client_for(base_url, API_KEY) as client:
        old = await client.post("/jobs", json={"agent_id": "old", "engine": "claude-code"})
        await client.get(f"/jobs/{old.json()['job_id']}/wait")
        counted = (await client.get("/stats/jobs")).json()
        assert counted["last_event_id"] > 0  # the old job's submit, claim and finish
        headers = {"Last-Event-ID": str(counted["last_event_id"])}
        async with client.stream("GET", "/events", headers=headers) as stream:
            new = await client.post("/jobs", json={"agent_id": "new", "engine": "claude-code"})
            first = await asyncio.wait_for(_first_data(stream), 30)
    # The first event told is the new job's submission: nothing from before the count.
    assert first["job_id"] == new.json()["job_id"]
    assert first["status"] == "pending"


async def _first_data(stream: httpx.Response) -> dict[str, Any]:
    async for line in stream.aiter_lines():
        if line.startswith("data:"):
            data: dict[str, Any] = json.loads(line.removeprefix("data:"))
            return data
    raise AssertionError("the stream ended without an event")
