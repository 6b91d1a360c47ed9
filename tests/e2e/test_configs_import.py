"""A Parpaing directory imported with `parpaing configs import` runs dry in a real worker.

The fixtures (tests/fixtures/parpaing) are written in Parpaing's format: a profile with a
prompt template, a CLAUDE.md template and a hook file, and an engine.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest

from tests.e2e.support import describe, docker_settings, isolated_network, run_job, serve
from tests.support.cli import parpaing

FIXTURES = Path(__file__).parent.parent / "fixtures" / "parpaing"


@pytest.fixture
def network(docker_client: docker.DockerClient) -> Iterator[str]:
    yield from isolated_network(docker_client)


async def test_an_imported_parpaing_profile_and_engine_run_dry(
    database_url: str, network: str, worker_image: str
) -> None:
    settings = docker_settings(database_url, network)
    async with serve(settings) as url, httpx.AsyncClient(base_url=url, timeout=60) as client:
        ran = await parpaing(url, "configs", "import", str(FIXTURES), api_key="")
        assert ran.code == 0, ran.stderr
        assert "profile triage" in ran.stdout and "engine echo-cli" in ran.stdout
        body = {"engine": "echo-cli", "profile": "triage", "dry_run": True}
        record = await run_job(client, "", prompt_vars={"audience": "users"}, **body)
    assert record["status"] == "completed", describe(record)
    report = json.loads(record["result"])
    assert report["dry_run"] is True, report
    argv = report["argv"]
    assert argv[:2] == ["echo-agent", "--quiet"], argv
    assert argv[argv.index("--tools") : argv.index("--tools") + 2] == ["--tools", "Read Grep"]
    assert "--prompt" in argv, argv
