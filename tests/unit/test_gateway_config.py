"""The gateway's nginx config as gateway/render-config writes it from the environment.

The renderer is the same POSIX shell script the container runs at start; here it runs on
this host with a clean environment, so every rule about what reaches nginx is checked
without Docker (the e2e tests run the rendered config in real nginx).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

GATEWAY = Path(__file__).resolve().parents[2] / "gateway"
RENDER = GATEWAY / "render-config"
TEMPLATE = GATEWAY / "nginx.conf.template"
BASE_ENV = {"PATH": "/usr/bin:/bin", "GATEWAY_RESOLVER": "127.0.0.11"}


def render(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(RENDER), str(TEMPLATE)],
        env={**BASE_ENV, **env},
        capture_output=True,
        text=True,
        check=False,
    )


def config(**env: str) -> str:
    done = render(**env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def location(text: str, prefix: str) -> str:
    """The body of `location <prefix> { ... }` (no nested braces but if-blocks)."""
    start = text.index(f"location {prefix} {{")
    end = text.index("\n        }\n", start)
    return text[start:end]


def test_every_placeholder_is_filled() -> None:
    text = config(ANTHROPIC_API_KEY="sk-ant-1", OPENAI_API_KEY="sk-2", GEMINI_API_KEY="g-3")
    directives = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    assert re.findall(r"@[A-Z_]+@", "\n".join(directives)) == []


def test_defaults_go_to_the_public_apis_and_tower_over_the_socket() -> None:
    text = config()
    assert 'set $anthropic_upstream "https://api.anthropic.com";' in text
    assert 'set $openai_upstream "https://api.openai.com";' in text
    assert 'set $gemini_upstream "https://generativelanguage.googleapis.com";' in text
    assert 'set $tower_auth "http://parpaing_tower_auth/gateway/auth";' in text
    assert "resolver 127.0.0.11 valid=30s;" in text


def test_the_replicas_sockets_are_tried_in_turn_slot_0_first() -> None:
    text = config(TOWER_AUTH_SOCKET="/run/parpaing/a.sock", TOWER_AUTH_SLOTS="3")
    (upstream,) = [line.strip() for line in text.splitlines() if "upstream parpaing_tower" in line]
    servers = re.findall(r"server (unix:\S+)[^;]*?( backup)?;", upstream)
    assert servers == [
        ("unix:/run/parpaing/a-0.sock", ""),
        ("unix:/run/parpaing/a-1.sock", " backup"),
        ("unix:/run/parpaing/a-2.sock", " backup"),
    ]
    # One replica's socket, for tower's own end-to-end check (/health/tower/N).
    assert '"http://unix:/run/parpaing/a-$tower_slot.sock:/gateway/auth"' in text
    assert len(re.findall(r"server unix:", config())) == 16


def test_an_unconfigured_provider_is_refused_with_a_status_engines_do_not_retry() -> None:
    text = config(OPENAI_API_KEY="sk-open")
    refusal = location(text, "@not_configured")
    assert "return 403 " in refusal and "permission_error" in refusal
    assert "add_header x-should-retry false always;" in refusal
    assert "set $missing_credential on tower" in refusal  # names the variable to set
    assert 'set $missing_credential "GEMINI_API_KEY";' in location(text, "/gemini/")


def test_the_api_key_is_injected_and_the_workers_credentials_are_replaced() -> None:
    anthropic = location(config(ANTHROPIC_API_KEY="sk-ant-real"), "/anthropic/")
    assert 'proxy_set_header x-api-key "sk-ant-real";' in anthropic
    assert 'proxy_set_header Authorization "";' in anthropic
    assert "proxy_set_header anthropic-beta $http_anthropic_beta;" in anthropic
    assert "auth_request /_parpaing_auth;" in anthropic
    assert "set $anthropic_ready 1;" in anthropic


def test_an_oauth_token_goes_as_bearer_with_the_oauth_beta_and_the_key_wins() -> None:
    oauth = location(config(CLAUDE_CODE_OAUTH_TOKEN="oat-1"), "/anthropic/")
    assert 'proxy_set_header Authorization "Bearer oat-1";' in oauth
    assert 'proxy_set_header x-api-key "";' in oauth
    assert "proxy_set_header anthropic-beta $anthropic_beta_with_oauth;" in oauth
    both = location(config(CLAUDE_CODE_OAUTH_TOKEN="oat-1", ANTHROPIC_API_KEY="k"), "/anthropic/")
    assert 'proxy_set_header x-api-key "k";' in both
    assert "oat-1" not in both


def test_openai_and_gemini_keys_and_unconfigured_providers() -> None:
    text = config(OPENAI_API_KEY="sk-open")
    openai = location(text, "/openai/")
    assert 'proxy_set_header Authorization "Bearer sk-open";' in openai
    assert 'proxy_set_header x-api-key "";' in openai
    assert "set $openai_ready 1;" in openai
    # No credential: the route refuses the call instead of calling the provider keyless.
    assert "set $anthropic_ready 0;" in location(text, "/anthropic/")
    assert "set $gemini_ready 0;" in location(text, "/gemini/")
    gemini = location(config(GEMINI_API_KEY="AIza-x"), "/gemini/")
    assert 'proxy_set_header x-goog-api-key "AIza-x";' in gemini


def test_an_upstream_path_prefix_is_kept_and_a_trailing_slash_dropped() -> None:
    text = config(ANTHROPIC_UPSTREAM="http://fake-llm:8000/prefix/")
    anthropic = location(text, "/anthropic/")
    assert 'set $anthropic_upstream "http://fake-llm:8000/prefix";' in anthropic
    assert "proxy_pass $anthropic_upstream$anthropic_tail;" in anthropic


def test_the_auth_cache_follows_its_setting_and_never_keeps_a_no() -> None:
    auth = location(config(GATEWAY_AUTH_CACHE_SECONDS="5"), "= /_parpaing_auth")
    assert "proxy_cache_valid 200 5s;" in auth
    assert "proxy_no_cache 0;" in auth
    assert "proxy_cache_key $parpaing_token;" in auth
    assert len(re.findall(r"proxy_cache_valid", auth)) == 1
    off = location(config(GATEWAY_AUTH_CACHE_SECONDS="0"), "= /_parpaing_auth")
    assert "proxy_no_cache 1;" in off and "proxy_cache_bypass 1;" in off


def test_compose_reaches_tower_over_tcp() -> None:
    text = config(TOWER_AUTH_URL="http://tower:8081/gateway/auth")
    assert 'set $tower_auth "http://tower:8081/gateway/auth";' in text
    assert "upstream parpaing_tower_auth" not in text


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ANTHROPIC_API_KEY", 'sk"; return 200 "pwned'),
        ("ANTHROPIC_API_KEY", "sk-ant with space"),
        ("OPENAI_API_KEY", "sk-$http_cookie"),
        ("GEMINI_API_KEY", "key}\nserver {"),
        ("CLAUDE_CODE_OAUTH_TOKEN", "tok|s|x|"),
        ("ANTHROPIC_UPSTREAM", "ftp://api.anthropic.com"),
        ("OPENAI_UPSTREAM", "https://api.openai.com; include /etc/passwd"),
        ("GEMINI_UPSTREAM", "https://user:pass@host"),
        ("TOWER_AUTH_URL", "https://tower/gateway/auth"),
        ("TOWER_AUTH_URL", 'http://tower"; deny all; "'),
        ("GATEWAY_AUTH_CACHE_SECONDS", "61"),
        ("GATEWAY_AUTH_CACHE_SECONDS", "1s"),
        ("GATEWAY_RESOLVER", "1.1.1.1; include x"),
        ("TOWER_AUTH_SOCKET", "/run/x.sock; server evil"),
        ("TOWER_AUTH_SOCKET", "relative.sock"),
        ("TOWER_AUTH_SLOTS", "0"),
        ("TOWER_AUTH_SLOTS", "100"),
    ],
)
def test_a_bad_value_stops_the_start_naming_the_variable_never_the_value(
    name: str, value: str
) -> None:
    done = render(**{name: value})
    assert done.returncode != 0
    assert done.stdout == ""
    assert name in done.stderr
    assert value not in done.stderr


def test_the_renderer_uses_the_containers_resolver_by_default(tmp_path: Path) -> None:
    # No GATEWAY_RESOLVER: the first nameserver of /etc/resolv.conf, as nginx needs an address.
    done = subprocess.run(
        [str(RENDER), str(TEMPLATE)],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    nameservers = [
        line.split()[1]
        for line in Path("/etc/resolv.conf").read_text().splitlines()
        if line.startswith("nameserver")
    ]
    if not nameservers:
        assert done.returncode != 0 and "GATEWAY_RESOLVER" in done.stderr
        return
    expected = f"[{nameservers[0]}]" if ":" in nameservers[0] else nameservers[0]
    assert f"resolver {expected} valid=30s;" in done.stdout


def test_without_a_writable_socket_directory_workers_get_no_socket_and_it_says_so() -> None:
    # On this host nothing is mounted at the workers' socket directory, as in a gateway
    # container started without its socket volume: TCP only, and a line saying why.
    assert not Path("/run/parpaing-gateway").exists()
    done = render()
    assert done.returncode == 0, done.stderr
    assert "listen 8080;" in done.stdout
    assert "listen unix:" not in done.stdout
    assert "workers cannot reach this gateway" in done.stderr
