"""Gateway tokens and what tower hands the gateway container: pure parts."""

from __future__ import annotations

import hashlib

from pydantic import SecretStr

from tower.gateway import tokens
from tower.gateway.container import (
    container_options,
    gateway_environment,
    gateway_spec,
)
from tower.gateway.listener import wanted
from tower.settings import Settings, gateway_auth_socket, gateway_container


def test_tokens_are_random_urlsafe_and_stored_as_sha256_hex() -> None:
    minted = {tokens.mint() for _ in range(200)}
    assert len(minted) == 200
    token = minted.pop()
    assert tokens.plausible(token)
    assert len(token) == tokens.MIN_TOKEN_CHARS
    assert tokens.digest(token) == hashlib.sha256(token.encode()).hexdigest()
    assert tokens.digest(token) != tokens.digest(token + "x")


def test_implausible_tokens_are_refused_before_any_lookup() -> None:
    for value in ("", "short", "a" * 42, "a" * 257, "a" * 42 + " ", "a" * 42 + "é", "a/" * 30):
        assert not tokens.plausible(value), value
    assert tokens.plausible("A-b_" * 11)


def settings(**values: object) -> Settings:
    return Settings(state_dir="/srv/state", **values)  # type: ignore[arg-type]


def test_the_gateway_gets_the_credentials_set_and_only_those() -> None:
    env = gateway_environment(settings(anthropic_api_key="sk-ant", openai_api_key=""))
    assert env["ANTHROPIC_API_KEY"] == "sk-ant"
    assert "OPENAI_API_KEY" not in env and "CLAUDE_CODE_OAUTH_TOKEN" not in env
    # Each replica's socket is a slot beside this name (tower/gateway/listener.py).
    assert env["TOWER_AUTH_SOCKET"] == "/run/parpaing/auth.sock"
    assert env["TOWER_AUTH_SLOTS"] == "16"
    assert "TOWER_AUTH_URL" not in env
    assert env["GATEWAY_AUTH_CACHE_SECONDS"] == "1"
    assert env["ANTHROPIC_UPSTREAM"] == "https://api.anthropic.com"


def test_names_follow_the_gateway_url_and_the_socket_the_state_dir() -> None:
    plain = settings()
    assert gateway_container(plain) == "parpaing-gateway"
    assert str(gateway_auth_socket(plain)) == "/srv/state/gateway/auth.sock"
    custom = settings(gateway_url="http://gw-7:8080", gateway_auth_socket="/run/x/a.sock")
    spec = gateway_spec(custom, "sha256:abc")
    assert (spec.name, spec.socket_dir, spec.workers_socket_volume) == (
        "gw-7",
        "/run/x",
        "gw-7-socket",
    )
    assert gateway_environment(custom)["TOWER_AUTH_SOCKET"] == "/run/parpaing/a.sock"


def test_the_digest_changes_with_image_credentials_and_upstreams_only() -> None:
    base = gateway_spec(settings(anthropic_api_key="a"), "sha256:1")
    assert gateway_spec(settings(anthropic_api_key="a"), "sha256:1").digest() == base.digest()
    changed = [
        gateway_spec(settings(anthropic_api_key="a"), "sha256:2"),
        gateway_spec(settings(anthropic_api_key="b"), "sha256:1"),
        gateway_spec(settings(anthropic_api_key="a", openai_upstream="http://x"), "sha256:1"),
        gateway_spec(settings(anthropic_api_key="a", gateway_auth_cache_seconds=0), "sha256:1"),
    ]
    assert len({spec.digest() for spec in changed} | {base.digest()}) == 5


def test_the_gateway_container_is_locked_down() -> None:
    options = container_options(gateway_spec(settings(), "sha256:1"))
    assert options["read_only"] is True
    assert options["cap_drop"] == ["ALL"]
    assert options["security_opt"] == ["no-new-privileges"]
    assert options["volumes"] == {
        "/srv/state/gateway": {"bind": "/run/parpaing", "mode": "ro"},
        "parpaing-gateway-socket": {"bind": "/run/parpaing-gateway", "mode": "rw"},
    }
    assert options["network"] == "parpaing-egress"
    assert "privileged" not in options and "user" not in options  # the image runs as www-data


def test_secrets_do_not_show_in_settings_reprs() -> None:
    value = settings(anthropic_api_key="sk-ant-secret")
    assert "sk-ant-secret" not in repr(value)
    assert isinstance(value.anthropic_api_key, SecretStr)


def test_which_listeners_a_tower_opens() -> None:
    assert wanted(settings(tower_runner="docker")) == (True, False)
    assert wanted(settings(tower_runner="docker", gateway_managed=False)) == (False, False)
    assert wanted(settings(tower_runner="simulated")) == (False, False)
    compose = settings(
        tower_runner="docker", gateway_managed=False, gateway_auth_listen="0.0.0.0:8081"
    )
    assert wanted(compose) == (False, True)
