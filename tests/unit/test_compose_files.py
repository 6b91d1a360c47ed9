"""The compose files agree with each other, with .env.example and with tower's settings."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from tower.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEV = ROOT / "docker-compose.yml"
PROD = ROOT / "docker-compose.prod.yml"
ENV_EXAMPLE = ROOT / ".env.example"
# Settings a compose tower does not take from .env: fixed by the image or the deployment,
# meant for tests and the all-in-one `parpaing serve`, or the gateway's alone (provider
# credentials never reach a tower here: the gateway service holds them).
NOT_FROM_ENV = {
    "tower_host",
    "tower_port",
    "tower_id",
    "state_dir",
    "simulated_run_log",
    "gateway_url",
    "gateway_image",
    "gateway_egress_net",
    "gateway_auth_socket",
    "gateway_auth_cache_seconds",
    "anthropic_api_key",
    "claude_code_oauth_token",
    "openai_api_key",
    "gemini_api_key",
    "anthropic_upstream",
    "openai_upstream",
    "gemini_upstream",
}
GATEWAY_ONLY = {name.upper() for name in NOT_FROM_ENV if name.endswith(("_key", "_token"))}


def _load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


def _without_builds(compose: dict[str, Any]) -> dict[str, Any]:
    services = {
        name: {key: value for key, value in service.items() if key != "build"}
        for name, service in compose["services"].items()
    }
    return {**compose, "services": services}


def _default(expression: str) -> str:
    match = re.fullmatch(r"\$\{\w+:-([^}]*)\}", expression)
    assert match, expression
    return match.group(1)


def test_prod_is_the_dev_deployment_without_builds() -> None:
    prod = _load(PROD)
    assert all("build" not in service for service in prod["services"].values())
    assert prod == _without_builds(_load(DEV))


def test_every_tower_setting_reaches_the_towers() -> None:
    environment = _load(DEV)["services"]["tower"]["environment"]
    expected = {name.upper() for name in Settings.model_fields} - {
        name.upper() for name in NOT_FROM_ENV
    }
    assert set(environment) == expected


def test_every_variable_is_documented_in_env_example() -> None:
    used = set(re.findall(r"\$\{(\w+)", DEV.read_text() + PROD.read_text()))
    documented = set(re.findall(r"^#?(\w+)=", ENV_EXAMPLE.read_text(), re.MULTILINE))
    assert used - documented == set()
    assert re.search(r"^POSTGRES_PASSWORD=$", ENV_EXAMPLE.read_text(), re.MULTILINE)


def test_docker_waits_longer_than_the_shutdown_grace() -> None:
    tower = _load(DEV)["services"]["tower"]
    grace = float(_default(tower["environment"]["SHUTDOWN_GRACE_SECONDS"]))
    stop_after = _default(tower["stop_grace_period"])
    assert stop_after.endswith("s")
    assert float(stop_after[:-1]) >= grace + 20


def test_provider_credentials_reach_the_gateway_only() -> None:
    services = _load(DEV)["services"]
    for name, service in services.items():
        environment = set(service.get("environment") or {})
        if name == "gateway":
            assert environment >= GATEWAY_ONLY
        else:
            assert not GATEWAY_ONLY & environment, name
