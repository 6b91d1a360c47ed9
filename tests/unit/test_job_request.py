"""JobRequest validation: every rule, and every rejection names its field."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from tower.jobs.schemas import (
    PROMPT_MAX,
    SYSTEM_PROMPT_MAX,
    TOOL_MAX,
    TOOLS_MAX,
    VARS_MAX,
    JobRequest,
)
from tower.jobs.service import request_hash

MINIMAL = {"agent_id": "agent", "engine": "claude-code"}


def parse(**fields: Any) -> JobRequest:
    return JobRequest.model_validate({**MINIMAL, **fields})


def rejected_locs(**fields: Any) -> list[tuple[str | int, ...]]:
    with pytest.raises(ValidationError) as caught:
        JobRequest.model_validate({**MINIMAL, **fields})
    return [tuple(error["loc"]) for error in caught.value.errors()]


def test_minimal_request_gets_the_defaults() -> None:
    request = parse()
    assert (request.profile, request.output_format, request.priority) == ("default", "json", 0)
    assert (request.prompt, request.dry_run, request.max_attempts) == ("", False, None)
    assert (request.prompt_vars, request.plugins, request.allowed_tools) == ({}, [], [])


def test_agent_id_is_required() -> None:
    body = {key: value for key, value in MINIMAL.items() if key != "agent_id"}
    with pytest.raises(ValidationError) as caught:
        JobRequest.model_validate(body)
    assert [error["loc"] for error in caught.value.errors()] == [("agent_id",)]


def test_the_engine_may_be_left_to_the_profile() -> None:
    body = {key: value for key, value in MINIMAL.items() if key != "engine"}
    assert JobRequest.model_validate(body).engine is None


@pytest.mark.parametrize("field", ["agent_id", "engine", "profile"])
@pytest.mark.parametrize("value", ["", "a" * 65, "has space", "dot.ted", "slash/ed", "ünï", 7])
def test_safe_ids_are_refused_naming_the_field(field: str, value: object) -> None:
    assert rejected_locs(**{field: value}) == [(field,)]


@pytest.mark.parametrize("value", ["a", "A-z_0-9", "x" * 64])
def test_safe_ids_accepted(value: str) -> None:
    assert parse(agent_id=value, engine=value, profile=value).agent_id == value


def test_unknown_field_is_named() -> None:
    assert rejected_locs(promt="typo") == [("promt",)]


def test_prompt_at_the_limit_is_kept_whole_and_one_more_is_refused() -> None:
    assert len(parse(prompt="p" * PROMPT_MAX).prompt) == PROMPT_MAX
    assert rejected_locs(prompt="p" * (PROMPT_MAX + 1)) == [("prompt",)]


@pytest.mark.parametrize("text", ["nul\x00byte", "lone \ud800 surrogate"])
def test_unstorable_text_is_refused(text: str) -> None:
    assert rejected_locs(prompt=text) == [("prompt",)]
    assert rejected_locs(system_prompt=text) == [("system_prompt",)]
    assert rejected_locs(prompt_vars={"name": text}) == [("prompt_vars", "name")]
    assert rejected_locs(allowed_tools=[text]) == [("allowed_tools", 0)]
    assert rejected_locs(mcp_config={"servers": {"x": [text]}}) == [("mcp_config",)]


def test_system_prompt_limit() -> None:
    assert parse(system_prompt="s" * SYSTEM_PROMPT_MAX).system_prompt
    assert rejected_locs(system_prompt="s" * (SYSTEM_PROMPT_MAX + 1)) == [("system_prompt",)]


@pytest.mark.parametrize("field", ["prompt_vars", "claude_md_vars"])
def test_vars_take_strings_numbers_and_booleans(field: str) -> None:
    values = {"s": "text", "i": 3, "f": 1.5, "b": True, "f2": "true"}
    parsed = getattr(parse(**{field: values}), field)
    assert parsed == values
    assert type(parsed["b"]) is bool and type(parsed["f2"]) is str


@pytest.mark.parametrize("field", ["prompt_vars", "claude_md_vars"])
@pytest.mark.parametrize("value", [None, [1], {"nested": 1}, float("nan"), float("inf")])
def test_vars_refuse_other_values_naming_the_variable(field: str, value: object) -> None:
    assert rejected_locs(**{field: {"bad": value}}) == [(field, "bad")]


def test_vars_count_and_names_are_bounded() -> None:
    assert rejected_locs(prompt_vars={f"v{i}": i for i in range(VARS_MAX + 1)}) == [
        ("prompt_vars",)
    ]
    assert rejected_locs(prompt_vars={"": 1})[0][0] == "prompt_vars"


def test_plugins_are_safe_ids() -> None:
    assert parse(plugins=["git-tools", "lint_1"]).plugins == ["git-tools", "lint_1"]
    assert rejected_locs(plugins=["ok", "../etc"]) == [("plugins", 1)]


def test_allowed_tools_bounds() -> None:
    assert parse(allowed_tools=["Bash(git log:*)"]).allowed_tools == ["Bash(git log:*)"]
    assert rejected_locs(allowed_tools=["t" * (TOOL_MAX + 1)]) == [("allowed_tools", 0)]
    assert rejected_locs(allowed_tools=["Read"] * (TOOLS_MAX + 1)) == [("allowed_tools",)]
    assert rejected_locs(allowed_tools="Read") == [("allowed_tools",)]


@pytest.mark.parametrize(
    ("field", "good", "bad"),
    [
        ("max_turns", [1, 100], [0, 101, 1.5, "many"]),
        ("max_budget_usd", [0.01, 50], [0, -1, 50.01, float("nan"), float("inf")]),
        ("priority", [-1000, 0, 1000], [-1001, 1001]),
        ("max_attempts", [1, 20], [0, 21]),
        ("output_format", ["json", "text", "stream-json"], ["xml", ""]),
        ("dry_run", [True, False], ["maybe", 2]),
        ("model", ["claude-sonnet-4-5", "openai/gpt-4o:latest"], ["", "has space", "m" * 201]),
    ],
)
def test_bounded_fields(field: str, good: list[object], bad: list[object]) -> None:
    for value in good:
        assert getattr(parse(**{field: value}), field) == value
    for value in bad:
        assert rejected_locs(**{field: value}) == [(field,)], value


def test_mcp_config_is_a_json_object() -> None:
    config = {"mcpServers": {"git": {"command": "git-mcp", "args": ["--x"], "port": 1}}}
    assert parse(mcp_config=config).mcp_config == config
    assert rejected_locs(mcp_config=["not", "an", "object"]) == [("mcp_config",)]
    assert rejected_locs(mcp_config={"big": "x" * 1_000_001}) == [("mcp_config",)]


def test_webhook_url_rejection_names_the_field() -> None:
    assert parse(webhook_url="https://example.com/hook").webhook_url == "https://example.com/hook"
    assert rejected_locs(webhook_url="ftp://example.com/hook") == [("webhook_url",)]


def test_webhook_url_private_hosts_are_left_to_the_service() -> None:
    # Whether a private host may receive webhooks is the operator's choice
    # (WEBHOOK_ALLOW_PRIVATE), so the model checks only the URL's shape.
    assert parse(webhook_url="http://10.0.0.5/hook").webhook_url == "http://10.0.0.5/hook"


def test_every_rejection_is_reported_at_once() -> None:
    locs = rejected_locs(agent_id="", max_turns=0, priority=5000, output_format="xml")
    assert sorted(locs) == [("agent_id",), ("max_turns",), ("output_format",), ("priority",)]


def test_hash_ignores_key_order_and_spelled_out_defaults() -> None:
    plain = parse(prompt="hi")
    spelled = JobRequest.model_validate(
        {"prompt": "hi", "profile": "default", "dry_run": False, **MINIMAL}
    )
    assert request_hash(plain) == request_hash(spelled)
    assert request_hash(plain) != request_hash(parse(prompt="hi!"))
    assert request_hash(parse(prompt_vars={"n": 1})) != request_hash(parse(prompt_vars={"n": "1"}))
