"""A job's egress allow-list through the real API: its profile's, narrowed or widened by the
job within EGRESS_ALLOW, refused with a message otherwise, and none where no proxy runs
(docs/egress.md)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import pytest

from tests.support.live import client_for, live_tower
from tower.execution.simulated import SimulatedRunner
from tower.settings import Settings

API_KEY = "egress-submit-test-key"
PROFILE = """\
name = "fetcher"
engine = "claude-code"

[egress]
allow = ["pypi.org", "*.github.com:443"]
"""

Tower = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def tower(database_url: str) -> Tower:
    """`async with tower(**settings) as client`: a tower with the `fetcher` profile."""

    def start(**overrides: Any) -> AbstractAsyncContextManager[httpx.AsyncClient]:
        settings = Settings(
            database_url=database_url,
            tower_runner="simulated",
            tower_api_key=API_KEY,
            **overrides,
        )
        return _serving(settings)

    return start


@contextlib.asynccontextmanager
async def _serving(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        live_tower(settings, SimulatedRunner()) as url,
        client_for(url, API_KEY) as client,
    ):
        put = await client.put("/configs/profile/fetcher", json={"content": PROFILE})
        assert put.status_code in (200, 201), put.text
        yield client


def job(**fields: object) -> dict[str, object]:
    body = {"agent_id": "t", "profile": "fetcher", "prompt": "sleep 3600", "dry_run": True}
    return body | fields


async def allow_of(client: httpx.AsyncClient, **fields: object) -> Any:
    response = await client.post("/jobs", json=job(**fields))
    assert response.status_code == 202, response.text
    record = (await client.get(f"/jobs/{response.json()['job_id']}")).json()
    return record["egress"]


async def test_a_job_runs_with_its_profile_s_list_or_a_narrower_one(tower: Tower) -> None:
    async with tower() as client:
        assert await allow_of(client) == {
            "allow": ["pypi.org", "*.github.com:443"],
            "allowed": 0,
            "refused": [],
            "refused_count": 0,
            "bytes": 0,
            "limited": None,
        }
        narrowed = await allow_of(client, egress={"allow": ["api.github.com:443"]})
        assert narrowed["allow"] == ["api.github.com:443"]
        assert await allow_of(client, egress={"allow": []}) is None
        # The default profile lets nothing out: no list, no proxy.
        assert await allow_of(client, profile="default") is None


async def test_a_job_widens_it_only_within_egress_allow(tower: Tower) -> None:
    async with tower(egress_allow="*.example.com") as client:
        widened = await allow_of(client, egress={"allow": ["pypi.org", "api.example.com"]})
        assert widened["allow"] == ["pypi.org", "api.example.com"]
        refused = await client.post(
            "/jobs", json=job(egress={"allow": ["pypi.org", "evil.com", "pypi.org:8080"]})
        )
    assert refused.status_code == 422, refused.text
    [problem] = refused.json()["detail"]
    assert problem["loc"] == ["body", "egress"]
    assert "evil.com, pypi.org:8080: neither within" in problem["msg"]
    assert "EGRESS_ALLOW" in problem["msg"]


@pytest.mark.parametrize(
    "entries", [["bad host"], ["https://pypi.org"], ["x.com"] * 101, ["a" * 300]]
)
async def test_malformed_lists_are_422(tower: Tower, entries: list[str]) -> None:
    async with tower() as client:
        response = await client.post("/jobs", json=job(egress={"allow": entries}))
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][:2] == ["body", "egress"]


async def test_address_entries_need_private_targets_allowed(tower: Tower) -> None:
    async with tower(egress_allow="10.0.0.5:8080") as client:
        refused = await client.post("/jobs", json=job(egress={"allow": ["10.0.0.5:8080"]}))
    assert refused.status_code == 422 and "EGRESS_ALLOW_PRIVATE" in refused.text
    async with tower(egress_allow="10.0.0.5:8080", egress_allow_private=True) as client:
        allowed = await allow_of(client, egress={"allow": ["10.0.0.5:8080"]})
    assert allowed["allow"] == ["10.0.0.5:8080"]


async def test_where_no_proxy_runs_a_job_with_a_list_is_refused(tower: Tower) -> None:
    async with tower(egress_managed=False) as client:
        refused = await client.post("/jobs", json=job())
        bare = await client.post("/jobs", json=job(profile="default"))
    assert refused.status_code == 409 and "EGRESS_MANAGED=false" in refused.text
    assert bare.status_code == 202, bare.text
    # Compose: a proxy of its own asks the towers on EGRESS_LISTEN.
    async with tower(egress_managed=False, egress_listen="127.0.0.1:1") as client:
        accepted = await client.post("/jobs", json=job())
    assert accepted.status_code == 202, accepted.text
