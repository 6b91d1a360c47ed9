"""A job whose engine's provider has no credential is refused at submit (409 naming the
variable), dry runs still pass, /health lists the providers with a credential; a job
without an engine runs the profile's. Real HTTP, real PostgreSQL.

The tower is configured as all-in-one Docker (it knows the keys it hands its gateway),
with the simulated runner in place of Docker: the check is made at submit, before any
runner is involved."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.live import client_for, live_tower
from tower.execution.simulated import SimulatedRunner
from tower.settings import Settings

SECRET = "sk-ant-never-shown-anywhere"
NO_KEYS = {
    "anthropic_api_key": "",
    "claude_code_oauth_token": "",
    "openai_api_key": "",
    "gemini_api_key": "",
}

Tower = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def tower(database_url: str, tmp_path: Path) -> Tower:
    """`async with tower(**keys) as client`: a tower holding these provider keys."""

    def start(**keys: str) -> AbstractAsyncContextManager[httpx.AsyncClient]:
        settings = Settings(
            database_url=database_url,
            tower_runner="docker",
            gateway_managed=True,
            egress_managed=False,  # no proxy container: these jobs reach nothing
            state_dir=str(tmp_path / "state"),
            **(NO_KEYS | keys),  # type: ignore[arg-type]
        )
        return _serving(settings)

    return start


@asynccontextmanager
async def _serving(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with live_tower(settings, SimulatedRunner()) as url, client_for(url) as client:
        yield client


def job(**fields: Any) -> dict[str, Any]:
    return {"agent_id": "creds", "prompt": "sleep 3600", **fields}


async def test_no_credential_is_a_409_naming_the_variable_and_dry_runs_pass(
    tower: Tower,
) -> None:
    async with tower() as client:
        refused = await client.post("/jobs", json=job(engine="claude-code"))
        assert refused.status_code == 409, refused.text
        assert "ANTHROPIC_API_KEY" in refused.json()["detail"]
        # The profile's engine (claude-code) is checked the same way.
        assert (await client.post("/jobs", json=job())).status_code == 409
        codex = await client.post("/jobs", json=job(engine="codex"))
        assert codex.status_code == 409 and "OPENAI_API_KEY" in codex.json()["detail"]
        dry = await client.post("/jobs", json=job(engine="claude-code", dry_run=True))
        assert dry.status_code == 202, dry.text
        health = (await client.get("/health")).json()
        assert health["checks"]["providers"].startswith("none (set ANTHROPIC_API_KEY")
        total = (await client.get("/jobs")).json()["total"]
        assert total == 1, "a refused job was stored"


async def test_a_credential_lets_its_engines_in_and_health_lists_it(tower: Tower) -> None:
    async with tower(anthropic_api_key=SECRET) as client:
        for engine in ("claude-code", "opencode", "aider"):  # aider: Anthropic or OpenAI
            accepted = await client.post("/jobs", json=job(engine=engine))
            assert accepted.status_code == 202, (engine, accepted.text)
        gemini = await client.post("/jobs", json=job(engine="gemini"))
        assert gemini.status_code == 409 and "GEMINI_API_KEY" in gemini.json()["detail"]
        health = await client.get("/health")
    assert health.json()["checks"]["providers"] == "anthropic"
    assert SECRET not in health.text


async def test_a_job_without_an_engine_runs_the_profiles(tower: Tower) -> None:
    async with tower(claude_code_oauth_token=SECRET) as client:
        submitted = await client.post("/jobs", json=job(profile="default"))
        assert submitted.status_code == 202, submitted.text
        record = (await client.get(f"/jobs/{submitted.json()['job_id']}")).json()
        assert record["engine"] == "claude-code"
        # A profile that names no engine: the request must, and the 422 says so.
        content = 'description = "no engine of its own"\n'
        put = await client.put("/configs/profile/engineless", json={"content": content})
        assert put.status_code == 200, put.text
        refused = await client.post("/jobs", json=job(profile="engineless"))
        assert refused.status_code == 422, refused.text
        assert refused.json()["detail"][0]["loc"] == ["body", "engine"]
        named = await client.post("/jobs", json=job(profile="engineless", engine="claude-code"))
        assert named.status_code == 202, named.text


async def test_a_gateway_run_elsewhere_holds_the_keys_so_nothing_is_refused(
    database_url: str, tmp_path: Path
) -> None:
    settings = Settings(
        database_url=database_url,
        tower_runner="docker",
        gateway_managed=False,
        state_dir=str(tmp_path / "state"),
        **NO_KEYS,  # type: ignore[arg-type]
    )
    async with _serving(settings) as client:
        assert (await client.post("/jobs", json=job(engine="codex"))).status_code == 202
        health = (await client.get("/health")).json()
    assert "GATEWAY_MANAGED=false" in health["checks"]["providers"]
