"""A profile's template is untrusted code, run at claim time by a live tower's Docker
runner: one that would loop for hours or build a gigabyte fails its job with a clear
message, and the tower goes on running jobs."""

from __future__ import annotations

from collections.abc import Iterator

import docker
import httpx
import pytest

from tests.e2e.support import describe, docker_settings, isolated_network, run_job, shell_tower

TEMPLATES = {
    "spin": "{% for a in prompt %}{% for b in prompt %}{% endfor %}{% endfor %}",
    "huge": "{{ prompt * 10**9 }}",
}


@pytest.fixture
def network(docker_client: docker.DockerClient) -> Iterator[str]:
    yield from isolated_network(docker_client)


async def _register(client: httpx.AsyncClient) -> None:
    for name, source in TEMPLATES.items():
        response = await client.put(f"/configs/template/{name}", json={"content": source})
        assert response.status_code in (200, 201), response.text
        profile = f'name = "{name}"\nengine = "shell"\nprompt_template = "{name}"\n'
        response = await client.put(f"/configs/profile/{name}", json={"content": profile})
        assert response.status_code in (200, 201), response.text


async def test_templates_over_their_limits_fail_their_jobs_and_the_next_job_runs(
    database_url: str, network: str, worker_image: str
) -> None:
    async with shell_tower(docker_settings(database_url, network)) as client:
        await _register(client)
        spun = await run_job(client, "x" * 100_000, profile="spin")
        huge = await run_job(client, "p", profile="huge")
        fine = await run_job(client, "printf fine")
    assert spun["status"] == "failed", describe(spun)
    assert "template 'spin': took longer than 2 s" in spun["error"]
    assert huge["status"] == "failed", describe(huge)
    assert "template 'huge': '*' would make 1000000000 bytes" in huge["error"]
    assert fine["status"] == "completed", describe(fine)
    assert fine["result"] == "fine"
