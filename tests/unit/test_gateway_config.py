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

from tower.gateway.providers import CREDENTIAL_VARIABLES
from tower.observability.metrics import GATEWAY_PROVIDERS

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


# --- inference only -------------------------------------------------------------------------


def map_entries(text: str, variable: str) -> list[tuple[str, str]]:
    """The (key, value) lines of `map ... $variable { ... }`, in order, comments dropped."""
    start = text.index(f" {variable} {{\n")
    body = text[start : text.index("\n    }\n", start)].splitlines()[1:]
    entries = [line.strip() for line in body if line.strip() and not line.strip().startswith("#")]
    return [_key_value(entry.removesuffix(";")) for entry in entries]


def _key_value(entry: str) -> tuple[str, str]:
    if entry.startswith('"'):
        key, _, value = entry[1:].partition('" ')
    else:
        key, _, value = entry.partition(" ")
    return key, value.strip().strip('"')


def map_value(text: str, variable: str, source: str) -> str:
    """What nginx's map gives for `source`: the first regex that matches, else the default
    (PCRE's named groups written Python's way; these patterns mean the same in both)."""
    default = ""
    for key, value in map_entries(text, variable):
        if key == "default":
            default = value
        elif key.startswith("~"):
            flags = re.IGNORECASE if key.startswith("~*") else 0
            pattern = key.lstrip("~*").replace("(?<", "(?P<")
            match = re.search(pattern, source, flags)
            if match:  # a literal, or one named group ($path)
                return match[value[1:]] if value.startswith("$") else value
    return default


# What the shipped engines call (docs/engines.md): forwarded, query strings and all.
ENGINE_CALLS = [
    "POST /anthropic/v1/messages?beta=true",
    "POST /anthropic/v1/messages",
    "POST /anthropic/v1/messages/count_tokens",
    "POST /openai/v1/chat/completions",
    "POST /openai/v1/responses",
    "POST /openai/v1/responses/compact",
    "POST /gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
    "POST /gemini/v1beta/models/gemini-2.5-pro:generateContent",
    "POST /gemini/v1beta/models/gemini-2.5-flash-lite:countTokens",
]
NOT_INFERENCE = {
    "POST /anthropic/v1/files": "anthropic",
    "GET /anthropic/v1/models": "anthropic",
    "POST /anthropic/v1/messages/batches": "anthropic",
    "GET /anthropic/v1/messages": "anthropic",
    "POST /anthropic/v1/messages/": "anthropic",
    "POST /anthropic/v1/%6Dessages": "anthropic",
    "POST /anthropic/v1/messages/../files": "anthropic",
    "POST /anthropic/v1/messages%3Fx": "anthropic",
    "GET /openai/v1/files": "openai",
    "POST /openai/v1/fine_tuning/jobs": "openai",
    "GET /openai/v1/organization/projects": "openai",
    "POST /openai/v1/batches": "openai",
    "GET /openai/v1/responses": "openai",
    "GET /openai/v1/responses/resp_1": "openai",
    "DELETE /openai/v1/responses/resp_1": "openai",
    "POST /openai/v1/chat/completions/x": "openai",
    "GET /gemini/v1beta/files": "gemini",
    "POST /gemini/upload/v1beta/files": "gemini",
    "POST /gemini/v1beta/models/m:embedContent": "gemini",
    "POST /gemini/v1beta/models/m:batchGenerateContent": "gemini",
    "POST /gemini/v1beta/tunedModels/m:generateContent": "gemini",
    "POST /gemini/v1beta/models/a/b:generateContent": "gemini",
}


def test_the_engines_calls_are_forwarded_and_nothing_else() -> None:
    text = config()
    for call in ENGINE_CALLS:
        assert map_value(text, "$parpaing_refused", call) == "", call
    for call, provider in NOT_INFERENCE.items():
        assert map_value(text, "$parpaing_refused", call) == provider, call
    # Outside the provider routes the map says nothing (those paths get 404 anyway).
    assert map_value(text, "$parpaing_refused", "GET /health") == ""


def test_every_provider_route_refuses_before_it_proxies() -> None:
    text = config(ANTHROPIC_API_KEY="a", OPENAI_API_KEY="o", GEMINI_API_KEY="g")
    for provider in ("anthropic", "openai", "gemini"):
        route = location(text, f"/{provider}/")
        refusal = route.index("if ($parpaing_refused) {\n                return 419;")
        assert refusal < route.index("proxy_pass ")
        assert "error_page 419 = @refused;" in route
        # @refused ends in error pages of its own: without this, nginx's default pages.
        assert "recursive_error_pages on;" in route


def test_a_refusal_asks_tower_naming_the_provider_and_never_calls_one() -> None:
    text = config(ANTHROPIC_API_KEY="sk-ant-real", OPENAI_API_KEY="o", GEMINI_API_KEY="g")
    refused = location(text, "@refused")
    assert "proxy_set_header X-Gateway-Refused $parpaing_refused;" in refused
    assert "proxy_set_header X-Gateway-Token $parpaing_token;" in refused
    assert 'set $tower_refusal "http://parpaing_tower_auth/gateway/auth";' in refused
    assert "proxy_pass $tower_refusal;" in refused
    assert "_upstream" not in refused and "sk-ant-real" not in refused
    assert "proxy_cache " not in refused  # every refusal reaches tower, to be counted
    assert "error_page 403 = @not_inference;" in refused
    assert "error_page 401 = @unauthorized;" in refused
    answer = location(text, "@not_inference")
    assert "return 403 " in answer and "permission_error" in answer
    assert "add_header x-should-retry false always;" in answer
    assert "$request_method $parpaing_refused_path is not an inference endpoint" in answer


def test_a_refusal_names_the_path_only_as_far_as_json_needs_no_escaping() -> None:
    text = config()
    assert map_value(text, "$parpaing_refused_path", "/openai/v1/files?limit=1") == (
        "/openai/v1/files"
    )
    assert map_value(text, "$parpaing_refused_path", '/openai/v1/a"b\\c') == "/openai/v1/a"
    assert map_value(text, "$parpaing_refused_path", "/gemini/v1beta/models/m:x") == (
        "/gemini/v1beta/models/m:x"
    )


def test_codex_websocket_handshake_gets_426_and_only_that() -> None:
    text = config(OPENAI_API_KEY="o")
    key = "$parpaing_websocket"
    assert map_value(text, key, "websocket|GET /openai/v1/responses") == "1"
    assert map_value(text, key, "WebSocket|GET /openai/v1/responses?x=1") == "1"
    assert map_value(text, key, "|GET /openai/v1/responses") == ""
    assert map_value(text, key, "websocket|GET /openai/v1/files") == ""
    assert map_value(text, key, "websocket|POST /openai/v1/responses") == ""
    route = location(text, "/openai/")
    assert route.index("if ($parpaing_websocket)") < route.index("if ($parpaing_refused)")
    assert "return 426 " in route


def test_refusals_name_the_providers_the_metric_counts() -> None:
    # The gateway's routes, tower's providers and the metric's labels are one list.
    named = {value for _, value in map_entries(config(), "$parpaing_refused") if value}
    assert named == set(CREDENTIAL_VARIABLES) == set(GATEWAY_PROVIDERS)
