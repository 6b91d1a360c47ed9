"""/profiles, /engines and /configs through real HTTP against a real tower."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime

import httpx
import pytest

from tests.support.live import client_for, live_tower
from tower.settings import Settings

KEY = "configs-test-key"
TEMPLATE = "Please: {{ prompt }}\n"
ENGINE = 'name = "Echo"\nbinary = "echo"\noutput = "text"\n[prompt]\nvia = "stdin"\n'


@pytest.fixture
async def base_url(database_url: str) -> AsyncIterator[str]:
    settings = Settings(database_url=database_url, tower_runner="simulated", tower_api_key=KEY)
    async with live_tower(settings) as url:
        yield url


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(base_url, KEY) as client:
        yield client


@pytest.fixture
async def anonymous(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(base_url) as client:
        yield client


def problem(response: httpx.Response) -> str:
    detail = response.json()["detail"]
    return detail if isinstance(detail, str) else " ".join(item["msg"] for item in detail)


async def test_profiles_list_shipped_profiles_with_typed_variables(
    anonymous: httpx.AsyncClient,
) -> None:
    response = await anonymous.get("/profiles")
    assert response.status_code == 200
    profiles = {profile["name"]: profile for profile in response.json()["profiles"]}
    assert {"default", "code-review", "researcher"} <= set(profiles)
    review = profiles["code-review"]
    assert review["model"]
    assert review["description"]
    focus = next(var for var in review["prompt_vars"] if var["name"] == "focus")
    assert focus == {
        "name": "focus",
        "type": "string",
        "required": False,
        "default": "all",
        "enum": None,  # free text, as Parpaing's code-review profile takes it
        "description": "What to look at most closely (all, security, performance, ...).",
    }
    include_praise = next(v for v in review["prompt_vars"] if v["name"] == "include_praise")
    assert include_praise["default"] is False


async def test_engines_list_shipped_engines_as_available(anonymous: httpx.AsyncClient) -> None:
    response = await anonymous.get("/engines")
    assert response.status_code == 200
    engines = {engine["id"]: engine for engine in response.json()["engines"]}
    assert set(engines) >= {"claude-code", "opencode", "codex", "gemini", "aider"}
    assert engines["claude-code"]["name"] == "Claude Code"
    assert all(engine["available"] is True for engine in engines.values())


async def test_template_crud(client: httpx.AsyncClient) -> None:
    created = await client.post("/configs/template/polite", json={"content": TEMPLATE})
    assert created.status_code == 201, created.text
    assert created.json()["content"] == TEMPLATE

    again = await client.post("/configs/template/polite", json={"content": TEMPLATE})
    assert again.status_code == 409

    read = await client.get("/configs/template/polite")
    assert read.status_code == 200
    assert read.json()["type"] == "template"
    assert read.json()["content"] == TEMPLATE
    first_update = datetime.fromisoformat(read.json()["updated_at"])

    replaced = await client.put("/configs/template/polite", json={"content": "Now: {{ prompt }}"})
    assert replaced.status_code == 200
    assert datetime.fromisoformat(replaced.json()["updated_at"]) > first_update
    assert (await client.get("/configs/template/polite")).json()["content"] == "Now: {{ prompt }}"

    names = await client.get("/configs/template")
    assert "polite" in names.json()["names"]

    deleted = await client.delete("/configs/template/polite")
    assert deleted.status_code == 204
    assert (await client.get("/configs/template/polite")).status_code == 404
    assert (await client.delete("/configs/template/polite")).status_code == 404


async def test_put_creates_and_a_new_profile_is_listed_at_once(client: httpx.AsyncClient) -> None:
    assert (await client.put("/configs/engine/echo", json={"content": ENGINE})).status_code == 200
    content = 'description = "Echo things"\nengine = "echo"\n[vars.loud]\ntype = "boolean"\n'
    response = await client.put("/configs/profile/echoer", json={"content": content})
    assert response.status_code == 200, response.text
    profiles = {p["name"]: p for p in (await client.get("/profiles")).json()["profiles"]}
    assert profiles["echoer"]["description"] == "Echo things"
    assert profiles["echoer"]["prompt_vars"][0]["type"] == "boolean"
    engines = {e["id"] for e in (await client.get("/engines")).json()["engines"]}
    assert "echo" in engines


@pytest.mark.parametrize(
    ("path", "content", "expected"),
    [
        ("/configs/plugin/x", "", "type must be one of"),
        ("/configs/profile/bad.name", "", "name"),
        ("/configs/profile/p", 'model = "m"\nmax_turns = = 3\n', "line 2"),
        ("/configs/profile/p", "max_turns = 0", "max_turns"),
        ("/configs/profile/p", 'prompt_template = "absent"', "'absent' does not exist"),
        ("/configs/engine/e", 'name = "E"', "binary"),
        ("/configs/template/t", "{% for %}", "line 1"),
        ("/configs/template/t", "nul \x00 here", "NUL"),
    ],
)
async def test_invalid_writes_are_422_naming_the_problem(
    client: httpx.AsyncClient, path: str, content: str, expected: str
) -> None:
    response = await client.put(path, json={"content": content})
    assert response.status_code == 422
    assert expected in problem(response)


@pytest.mark.parametrize(
    ("resources", "field"),
    [('memory = "0"', "resources.memory"), ("cpus = 0", "resources.cpus")],
)
async def test_a_profile_lifting_container_limits_is_422_and_not_stored(
    client: httpx.AsyncClient, resources: str, field: str
) -> None:
    # Docker reads memory 0 as "unlimited".
    response = await client.put(
        "/configs/profile/unbounded", json={"content": f"[resources]\n{resources}\n"}
    )
    assert response.status_code == 422
    assert field in problem(response)
    assert (await client.get("/configs/profile/unbounded")).status_code == 404


async def test_malformed_body_is_422(client: httpx.AsyncClient) -> None:
    assert (await client.put("/configs/template/t", json={})).status_code == 422
    assert (await client.put("/configs/template/t", json={"content": 3})).status_code == 422


async def test_deleting_what_jobs_rely_on_is_409(client: httpx.AsyncClient) -> None:
    response = await client.delete("/configs/profile/default")
    assert response.status_code == 409
    response = await client.delete("/configs/template/researcher")
    assert response.status_code == 409
    assert "researcher" in problem(response)
    assert (await client.get("/configs/template/researcher")).status_code == 200


async def test_reads_are_public_and_writes_need_the_key(
    anonymous: httpx.AsyncClient, base_url: str
) -> None:
    assert (await anonymous.get("/configs/profile/default")).status_code == 200
    assert (await anonymous.get("/configs/engine")).status_code == 200
    body = {"content": TEMPLATE}
    for response in (
        await anonymous.post("/configs/template/t", json=body),
        await anonymous.put("/configs/template/t", json=body),
        await anonymous.delete("/configs/template/default"),
    ):
        assert response.status_code == 401
    async with client_for(base_url, "wrong-key") as wrong:
        assert (await wrong.put("/configs/template/t", json=body)).status_code == 401
    assert (await anonymous.get("/configs/template/t")).status_code == 404
    assert (await anonymous.get("/configs/template/default")).status_code == 200


async def test_unknown_config_is_404(anonymous: httpx.AsyncClient) -> None:
    response = await anonymous.get("/configs/engine/nope")
    assert response.status_code == 404
    assert "nope" in problem(response)


async def test_parpaing_clients_variables_are_accepted_by_the_shipped_profiles(
    client: httpx.AsyncClient,
) -> None:
    """Parpaing's default, researcher and code-review variables, besides ours (dry runs:
    the simulated runner never starts them)."""
    for profile, prompt_vars in (
        ("default", {"task": "Summarise the README"}),
        ("researcher", {"query": "Which queue?", "criteria": "active", "context": "web"}),
        (
            "code-review",
            {
                "repo_url": "https://example.com/r.git",
                "focus": "security, performance",
                "branch": "main",
                "test_command": "pytest",
            },
        ),
    ):
        body = {
            "agent_id": "mover",
            "profile": profile,
            "prompt_vars": prompt_vars,
            "dry_run": True,
        }
        response = await client.post("/jobs", json=body)
        assert response.status_code == 202, (profile, response.text)


async def test_a_parpaing_profile_put_is_converted_or_refused_naming_the_keys(
    client: httpx.AsyncClient,
) -> None:
    template = await client.put("/configs/template/prompts-ask", json={"content": "Ask {{ q }}\n"})
    assert template.status_code == 200
    parpaing = (
        '[agent]\ndescription = "asks"\nmodel = "m"\n[prompt]\ntemplate = "prompts/ask.md.j2"\n'
        '[prompt.variables.q]\ntype = "string"\ndefault = "why"\nrequired = true\n'
    )
    response = await client.put("/configs/profile/ask", json={"content": parpaing})
    assert response.status_code == 200, response.text
    assert response.json()["content"].startswith("# Converted from a Parpaing profile")
    listed = {p["name"]: p for p in (await client.get("/profiles")).json()["profiles"]}
    assert [v["name"] for v in listed["ask"]["prompt_vars"]] == ["q"]
    refused = await client.put(
        "/configs/profile/ask2", json={"content": '[agent]\n[plugins]\nenabled = ["p"]\n'}
    )
    assert refused.status_code == 422
    assert "plugins.enabled" in problem(refused)
