from __future__ import annotations

import pytest

from tower.configs.defaults import shipped_defaults
from tower.configs.models import Engine, Profile, Template
from tower.configs.parse import check_kind, check_name, parse_config, parse_engine, parse_profile
from tower.errors import Invalid

SHIPPED = shipped_defaults()
SHIPPED_NAMES = {(kind, name) for kind, name, _ in SHIPPED}

ENGINE = """
binary = "tool"
name = "Tool"
output = "text"
[prompt]
via = "stdin"
"""


def invalid(kind: str, name: str, content: str) -> Invalid:
    with pytest.raises(Invalid) as caught:
        parse_config(kind, name, content)
    return caught.value


# --- shipped files ---------------------------------------------------------------------


def test_every_engine_profile_and_template_the_design_names_is_shipped() -> None:
    engines = {"claude-code", "opencode", "codex", "gemini", "aider"}
    profiles = {"default", "code-review", "researcher"}
    assert {("engine", name) for name in engines} <= SHIPPED_NAMES
    assert {("profile", name) for name in profiles} <= SHIPPED_NAMES


@pytest.mark.parametrize(
    ("kind", "name", "content"), SHIPPED, ids=[f"{k}/{n}" for k, n, _ in SHIPPED]
)
def test_shipped_file_parses(kind: str, name: str, content: str) -> None:
    config = parse_config(kind, name, content)
    assert isinstance(config, {"profile": Profile, "engine": Engine, "template": Template}[kind])


@pytest.mark.parametrize("name", [n for k, n, _ in SHIPPED if k == "profile"])
def test_shipped_profile_references_exist(name: str) -> None:
    profile = parse_profile(name, next(c for k, n, c in SHIPPED if (k, n) == ("profile", name)))
    for template in profile.template_names():
        assert ("template", template) in SHIPPED_NAMES
    assert profile.engine is None or ("engine", profile.engine) in SHIPPED_NAMES


def test_claude_code_engine_passes_prompt_on_stdin_and_runs_unattended() -> None:
    content = next(c for k, n, c in SHIPPED if (k, n) == ("engine", "claude-code"))
    engine = parse_engine("claude-code", content)
    assert engine.binary == "claude"
    assert engine.prompt.via == "stdin"
    assert {"-p", "--dangerously-skip-permissions"} <= set(engine.args)
    assert engine.flags["max_turns"].args == ["--max-turns", "{value}"]
    assert engine.env["ANTHROPIC_API_KEY"] == "{job_token}"


def test_no_shipped_engine_puts_the_prompt_itself_in_argv() -> None:
    for kind, name, content in SHIPPED:
        if kind == "engine":
            assert parse_engine(name, content).prompt.via in ("stdin", "file")


# --- names and kinds -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", "a b", "../etc", "x" * 65, "é", "a.b"])
def test_unsafe_names_are_refused(name: str) -> None:
    with pytest.raises(Invalid) as caught:
        check_name(name)
    assert caught.value.field == "name"


def test_safe_names_are_accepted() -> None:
    assert check_name("Code_review-2") == "Code_review-2"
    assert check_name("x" * 64) == "x" * 64


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(Invalid) as caught:
        check_kind("plugin")
    assert caught.value.field == "type"
    assert "profile, engine, template" in caught.value.message


# --- TOML and schema -------------------------------------------------------------------


def test_toml_syntax_error_names_the_line() -> None:
    error = invalid("profile", "p", 'description = "ok"\nmodel = \n')
    assert error.field == "content"
    assert "line 2" in error.message


def test_unknown_profile_key_is_refused() -> None:
    error = invalid("profile", "p", "max_turn = 3\n")
    assert "max_turn" in error.message


def test_wrong_type_is_refused_without_coercion() -> None:
    error = invalid("profile", "p", 'max_turns = "30"\n')
    assert "max_turns" in error.message


def test_out_of_range_max_turns_is_refused() -> None:
    assert "max_turns" in invalid("profile", "p", "max_turns = 101\n").message


def test_name_in_file_must_match_config_name() -> None:
    assert "does not match" in invalid("profile", "p", 'name = "other"\n').message
    assert "does not match" in invalid("engine", "e", f'id = "other"\n{ENGINE}').message


def test_minimal_profile_gets_its_name_from_the_key() -> None:
    profile = parse_profile("minimal", "")
    assert profile.name == "minimal"
    assert profile.vars == {}


def test_engine_missing_required_keys_is_refused() -> None:
    error = invalid("engine", "e", 'name = "E"\n')
    for key in ("binary", "prompt", "output"):
        assert key in error.message


def test_engine_unknown_flag_option_is_refused() -> None:
    error = invalid("engine", "e", ENGINE + '[flags.modle]\nargs = ["--model", "{value}"]\n')
    assert "modle" in error.message


def test_engine_unknown_placeholder_is_refused() -> None:
    error = invalid("engine", "e", ENGINE + '[flags.model]\nargs = ["--model", "{model}"]\n')
    assert "{model}" in error.message


def test_engine_env_placeholders_are_limited() -> None:
    assert parse_engine("e", ENGINE + '[env]\nKEY = "{job_token}"\n').env == {"KEY": "{job_token}"}
    assert "{secret}" in invalid("engine", "e", ENGINE + '[env]\nKEY = "{secret}"\n').message


def test_prompt_via_file_needs_a_file_placeholder() -> None:
    content = ENGINE.replace('via = "stdin"', 'via = "file"\nargs = ["--message-file"]')
    assert "{file}" in invalid("engine", "e", content).message


def test_prompt_via_unknown_mode_is_refused() -> None:
    assert "prompt.via" in invalid("engine", "e", ENGINE.replace("stdin", "argv")).message


def test_reserved_or_non_identifier_variable_names_are_refused() -> None:
    assert "reserved" in invalid("profile", "p", '[vars.prompt]\ntype = "string"\n').message
    error = invalid("profile", "p", '[vars."my-var"]\ntype = "string"\n')
    assert "identifier" in error.message


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ('type = "text"', "type"),
        ('type = "integer"\ndefault = "3"', "integer"),
        ('type = "integer"\ndefault = true', "boolean"),
        ('type = "string"\nrequired = true\ndefault = "x"', "required"),
        ('type = "string"\nenum = ["a", "b"]\ndefault = "c"', "enum"),
        ('type = "integer"\nenum = [1, "two"]', "integer"),
        ('type = "string"\nenum = []', "at least one"),
    ],
)
def test_inconsistent_variable_specs_are_refused(spec: str, problem: str) -> None:
    error = invalid("profile", "p", f"[vars.v]\n{spec}\n")
    assert "vars.v" in error.message
    assert problem in error.message


def test_float_variable_accepts_an_integer_default() -> None:
    profile = parse_profile("p", '[vars.t]\ntype = "float"\ndefault = 1\n')
    assert profile.vars["t"].default == 1


def test_template_syntax_error_names_the_line() -> None:
    error = invalid("template", "t", "line one\n{% if x %}\nno endif\n")
    assert error.field == "content"
    assert "line" in error.message


def test_resources_are_checked() -> None:
    assert "memory" in invalid("profile", "p", '[resources]\nmemory = "lots"\n').message
    assert "cpus" in invalid("profile", "p", "[resources]\ncpus = 0\n").message
    profile = parse_profile("p", '[resources]\nmemory = "512m"\ncpus = 1\ntimeout_seconds = 60\n')
    assert profile.resources.cpus == 1.0


@pytest.mark.parametrize(
    ("resources", "field"),
    [
        ('memory = "0"', "resources.memory"),
        ('memory = "0g"', "resources.memory"),
        ('memory = "0.0m"', "resources.memory"),
        ('memory = "-1g"', "resources.memory"),
        ("cpus = 0", "resources.cpus"),
        ("cpus = 0.0", "resources.cpus"),
        ("cpus = -2", "resources.cpus"),
    ],
)
def test_zero_or_negative_resources_are_refused_naming_the_field(
    resources: str, field: str
) -> None:
    # Docker reads memory 0 as "unlimited": a profile must not lift the container's limits.
    error = invalid("profile", "p", f"[resources]\n{resources}\n")
    assert error.field == "content"
    assert field in error.message


@pytest.mark.parametrize("content", ["a\x00b", "a\ud800b"])
def test_text_postgresql_cannot_store_is_refused(content: str) -> None:
    assert invalid("template", "t", content).field == "content"
