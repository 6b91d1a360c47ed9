"""Engine files turned into argv and env: the meaning of the engine format."""

from __future__ import annotations

import pytest

from tower.configs.defaults import shipped_defaults
from tower.configs.models import Engine
from tower.configs.parse import parse_engine
from tower.errors import Invalid

SHIPPED = {name: content for kind, name, content in shipped_defaults() if kind == "engine"}


def engine(name: str) -> Engine:
    return parse_engine(name, SHIPPED[name])


def test_claude_code_command_for_a_full_job() -> None:
    argv = engine("claude-code").command(
        {
            "model": "claude-sonnet-4-5",
            "max_turns": 12,
            "allowed_tools": ["Read", "Bash(git:*)"],
            "system_prompt": "be brief",
            "output_format": "json",
            "max_budget_usd": 1.5,
            "mcp_config": "in the file",
        },
        files={"system_prompt": "/job/system.md", "mcp_config": "/job/mcp.json"},
        prompt_file="/job/prompt.md",
    )
    assert argv == [
        "claude",
        "-p",
        "--dangerously-skip-permissions",
        "--model",
        "claude-sonnet-4-5",
        "--max-turns",
        "12",
        "--allowedTools",
        "Read,Bash(git:*)",
        "--append-system-prompt-file",
        "/job/system.md",
        "--output-format",
        "json",
        "--max-budget-usd",
        "1.5",
        "--mcp-config",
        "/job/mcp.json",
    ]


def test_options_not_set_are_not_passed() -> None:
    argv = engine("claude-code").command({"model": None}, {}, "/job/prompt.md")
    assert argv == ["claude", "-p", "--dangerously-skip-permissions"]


def test_stream_json_gets_its_own_arguments() -> None:
    argv = engine("claude-code").command({"output_format": "stream-json"}, {}, "/p")
    assert argv[-3:] == ["--output-format", "stream-json", "--verbose"]


def test_value_mapping_with_empty_args_passes_nothing() -> None:
    codex = engine("codex")
    assert "--json" in codex.command({"output_format": "json"}, {}, "/p")
    assert "--json" not in codex.command({"output_format": "text"}, {}, "/p")


def test_prompt_file_fills_the_file_placeholder() -> None:
    argv = engine("aider").command({"model": "sonnet"}, {}, "/job/prompt.md")
    assert argv[-2:] == ["--message-file", "/job/prompt.md"]
    assert argv[0] == "aider"


def test_codex_reads_the_prompt_from_stdin() -> None:
    assert engine("codex").command({}, {}, "/p")[-1] == "-"


def test_list_option_without_join_repeats_the_flag() -> None:
    custom = parse_engine(
        "custom",
        'name = "C"\nbinary = "c"\noutput = "text"\n[prompt]\nvia = "stdin"\n'
        '[flags.allowed_tools]\nargs = ["--tool", "{value}"]\n',
    )
    assert custom.command({"allowed_tools": ["a", "b"]}, {}, "/p") == [
        "c",
        "--tool",
        "a",
        "--tool",
        "b",
    ]


def test_file_flag_without_a_file_is_an_error() -> None:
    with pytest.raises(ValueError, match="file"):
        engine("claude-code").command({"system_prompt": "x"}, {}, "/p")


def test_environment_points_at_the_gateway_with_the_job_token() -> None:
    env = engine("claude-code").environment("http://gateway:8080", "job-token-1")
    assert env["ANTHROPIC_BASE_URL"] == "http://gateway:8080/anthropic"
    assert env["ANTHROPIC_API_KEY"] == "job-token-1"
    assert engine("codex").environment("http://g", "t")["OPENAI_BASE_URL"] == "http://g/openai/v1"


# Each shipped engine reaches its provider through the gateway's route for it, and holds
# the job token (never a key) in every variable its CLI reads a credential from.
GATEWAY_ROUTES = {
    "claude-code": {"ANTHROPIC_BASE_URL": "http://g/anthropic", "ANTHROPIC_API_KEY": "t"},
    "opencode": {"ANTHROPIC_BASE_URL": "http://g/anthropic/v1", "ANTHROPIC_API_KEY": "t"},
    "codex": {"OPENAI_BASE_URL": "http://g/openai/v1", "OPENAI_API_KEY": "t", "CODEX_API_KEY": "t"},
    "gemini": {"GOOGLE_GEMINI_BASE_URL": "http://g/gemini", "GEMINI_API_KEY": "t"},
    "aider": {
        "ANTHROPIC_API_BASE": "http://g/anthropic",
        "ANTHROPIC_API_KEY": "t",
        "OPENAI_API_BASE": "http://g/openai/v1",
        "OPENAI_API_KEY": "t",
    },
}


@pytest.mark.parametrize("engine_id", sorted(GATEWAY_ROUTES))
def test_every_shipped_engine_goes_through_its_gateway_route(engine_id: str) -> None:
    env = engine(engine_id).environment("http://g", "t")
    assert {key: env[key] for key in GATEWAY_ROUTES[engine_id]} == GATEWAY_ROUTES[engine_id]


def test_codex_gets_the_gateway_as_a_config_option_since_it_ignores_the_variable() -> None:
    argv = engine("codex").command({}, {}, "/p", gateway_url="http://g:8080")
    assert argv[argv.index("-c") + 1] == 'openai_base_url="http://g:8080/openai/v1"'


def test_gateway_url_is_the_only_placeholder_fixed_args_take() -> None:
    source = 'id = "x"\nname = "X"\nbinary = "x"\nargs = ["--base", "{job_token}"]\n'
    with pytest.raises(Invalid, match="job_token"):
        parse_engine("x", source)


@pytest.mark.parametrize("path", ["/etc", "../x", ".claude/../..", "", "a//b"])
def test_resume_state_paths_stay_under_home(path: str) -> None:
    source = (
        'id = "x"\nname = "X"\nbinary = "x"\noutput = "text"\n[prompt]\nvia = "stdin"\n'
        f'[resume]\nargs = ["--resume"]\nstate = ["{path}"]\n'
    )
    with pytest.raises(Invalid, match="state path"):
        parse_engine("x", source)


def test_only_claude_code_resumes_among_the_shipped_engines() -> None:
    shipped = ("claude-code", "codex", "opencode", "aider", "gemini")
    assert [name for name in shipped if engine(name).resume] == ["claude-code"]
