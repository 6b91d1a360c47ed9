"""Parpaing-format profiles, engines and templates: converted, parsed, rendered."""

from __future__ import annotations

from pathlib import Path

import pytest

from tower.configs import legacy
from tower.configs.legacy_dir import configs_in
from tower.configs.models import Config, Engine, Profile, Template
from tower.configs.parse import converted, parse_config
from tower.configs.render import render_claude_md, render_prompt
from tower.errors import Invalid

FIXTURES = Path(__file__).parent.parent / "fixtures" / "parpaing"


def _configs() -> dict[tuple[str, str], Config]:
    return {(k, n): parse_config(k, n, c) for k, n, c in configs_in(FIXTURES)}


def _profile() -> Profile:
    profile = _configs()[("profile", "triage")]
    assert isinstance(profile, Profile)
    return profile


def _source(name: str) -> str:
    template = _configs()[("template", name)]
    assert isinstance(template, Template)
    return template.source


def test_a_parpaing_directory_converts_to_valid_configs() -> None:
    configs = _configs()
    profile = _profile()
    assert profile.compat == "parpaing"
    assert profile.prompt_template == "prompts-triage"
    assert profile.hooks.pre == "#!/bin/sh\necho preparing\n"
    assert profile.resources.timeout_seconds == 600
    engine = configs[("engine", "echo-cli")]
    assert isinstance(engine, Engine)
    argv = engine.command({"allowed_tools": ["Read", "Grep"], "max_turns": 3}, {}, "/p")
    assert argv == [
        "echo-agent",
        "--quiet",
        "--tools",
        "Read Grep",
        "--turns",
        "3",
        "--prompt",
        "{prompt}",
    ]
    assert set(configs) >= {("template", "prompts-triage"), ("template", "claude-md-base")}


def test_templates_render_with_parpaings_rules() -> None:
    profile = _profile()
    prompt_source = _source("prompts-triage")
    text = render_prompt(profile, prompt_source, "", {"audience": "team"})
    # Undeclared names are empty and take their default(), as in Parpaing.
    assert (
        text
        == "Triage the build: keep the 5 most urgent items.\nWritten for: team.\n\nTone: plain\n"
    )
    # A request's own prompt replaces the template, as in Parpaing.
    assert render_prompt(profile, prompt_source, "just this", {}) == "just this"
    md_source = _source("claude-md-base")
    md = render_claude_md(profile, md_source, {"guidelines": "Be brief."})
    assert "Timeout: 600s, memory 512m" in md
    assert "Role: Triage lead" in md and "Guidelines: Be brief." in md


def test_what_cannot_be_converted_is_named() -> None:
    content = (
        '[agent]\noutput_format = "stream-json"\n[plugins]\nenabled = ["x"]\n'
        '[hooks]\npre = "setup.sh"\n[resources]\nmemory = "1g"\n'
    )
    with pytest.raises(legacy.LegacyInvalid) as caught:
        converted("profile", "p", content)
    message = caught.value.message
    for key in ("agent.output_format", "plugins.enabled", "hooks.pre", "resources.memory"):
        assert key in message
    with pytest.raises(Invalid, match=r"output\.mode.*env\.auth: 'FOO_KEY'"):
        converted("engine", "e", '[engine]\n[output]\nmode = "file"\n[env]\nauth = ["FOO_KEY"]\n')


def test_our_format_passes_through_and_template_names_are_paths() -> None:
    ours = 'name = "x"\ndescription = "ours"\n'
    assert converted("profile", "x", ours) == ours
    assert legacy.template_name("prompts/code-review.md.j2") == "prompts-code-review"
    with pytest.raises(Invalid):
        legacy.template_name("../x.j2")
