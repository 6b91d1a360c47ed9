"""build_spec: request > profile > defaults, prompt delivery, files, env, limits."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import tarfile
from typing import Any

import pytest

from tower.configs.defaults import shipped_defaults
from tower.configs.models import Engine, Profile, Template
from tower.configs.parse import parse_engine, parse_profile, parse_template
from tower.errors import Invalid
from tower.execution.bundle import bundle_tar
from tower.execution.spec import CLAUDE_MD_PATH, OPTION_FILES, PROMPT_PATH, JobSpec, build_spec
from tower.settings import Settings

SHIPPED = {(kind, name): content for kind, name, content in shipped_defaults()}
TEMPLATES = {
    name: parse_template(name, content)
    for (kind, name), content in SHIPPED.items()
    if kind == "template"
}
JOB_ID = "agent-0123456789ab"
TOKEN = "job-token-123"


def engine(name: str) -> Engine:
    return parse_engine(name, SHIPPED[("engine", name)])


def profile(name: str = "default") -> Profile:
    return parse_profile(name, SHIPPED[("profile", name)])


def spec(
    request: dict[str, Any] | None = None,
    *,
    profile_: Profile | None = None,
    engine_: Engine | None = None,
    templates: dict[str, Template] | None = None,
    settings: Settings | None = None,
) -> JobSpec:
    return build_spec(
        {"prompt": "fix the bug"} | (request or {}),
        profile_ or profile(),
        engine_ or engine("claude-code"),
        TEMPLATES if templates is None else templates,
        settings or Settings(),
        JOB_ID,
        TOKEN,
    )


def files(job: JobSpec) -> dict[str, bytes]:
    return {file.path: file.content for file in job.files}


def flag_value(argv: tuple[str, ...], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv else None


def custom_engine(prompt_toml: str, extra: str = "") -> Engine:
    return parse_engine(
        "custom",
        f'id = "custom"\nname = "c"\nbinary = "tool"\noutput = "text"\n{extra}\n{prompt_toml}',
    )


# --- precedence -------------------------------------------------------------------------


def test_profile_options_apply_when_the_request_gives_none() -> None:
    argv = spec().argv
    assert flag_value(argv, "--model") == "claude-sonnet-4-5"
    assert flag_value(argv, "--max-turns") == "30"
    assert flag_value(argv, "--allowedTools") == "Read,Edit,Write,Bash,Glob,Grep"


def test_request_options_override_the_profile() -> None:
    request = {"model": "claude-opus-4", "max_turns": 3, "allowed_tools": ["Read"]}
    argv = spec(request).argv
    assert flag_value(argv, "--model") == "claude-opus-4"
    assert flag_value(argv, "--max-turns") == "3"
    assert flag_value(argv, "--allowedTools") == "Read"


def test_an_empty_tool_list_in_the_request_means_not_given() -> None:
    assert flag_value(spec({"allowed_tools": []}).argv, "--allowedTools") is not None


def test_defaults_apply_when_neither_gives_an_option() -> None:
    bare = Profile(name="bare")
    job = spec(profile_=bare, templates={})
    assert job.argv == (
        "claude",
        "-p",
        "--dangerously-skip-permissions",
        "--output-format",
        "json",
    )
    assert job.output_format == "json"
    assert files(job) == {PROMPT_PATH: b"fix the bug"}  # no template: the prompt as given


def test_request_only_options_reach_argv() -> None:
    job = spec({"max_budget_usd": 2.5, "output_format": "stream-json"})
    assert flag_value(job.argv, "--max-budget-usd") == "2.5"
    at = job.argv.index("--output-format")
    assert job.argv[at : at + 3] == ("--output-format", "stream-json", "--verbose")
    assert job.output_format == "stream-json"


def test_a_profiles_budget_is_the_jobs_unless_the_job_sends_one() -> None:
    budgeted = parse_profile("budgeted", 'name = "budgeted"\nmax_budget_usd = 5.0\n')
    assert flag_value(spec(profile_=budgeted).argv, "--max-budget-usd") == "5.0"
    own = spec({"max_budget_usd": 1.5}, profile_=budgeted)
    assert flag_value(own.argv, "--max-budget-usd") == "1.5"


# --- prompt delivery ----------------------------------------------------------------------


def test_prompt_via_stdin_is_a_file_that_becomes_stdin() -> None:
    job = spec()
    assert job.stdin == PROMPT_PATH
    assert PROMPT_PATH not in job.argv
    assert files(job)[PROMPT_PATH].startswith(b"fix the bug")


def test_prompt_via_file_fills_the_file_flag() -> None:
    job = spec(engine_=engine("aider"))
    assert job.stdin is None
    assert flag_value(job.argv, "--message-file") == PROMPT_PATH
    assert PROMPT_PATH in files(job)


def test_prompt_via_arg_from_file_leaves_the_placeholder_for_the_worker() -> None:
    custom = custom_engine('[prompt]\nvia = "arg-from-file"\nargs = ["--text={prompt}"]\n')
    job = spec(engine_=custom, profile_=Profile(name="bare"), templates={})
    assert job.argv == ("tool", "--text={prompt}")
    assert job.stdin is None
    assert job.prompt_file == PROMPT_PATH
    assert files(job)[PROMPT_PATH] == b"fix the bug"


def test_the_prompt_is_rendered_with_the_profiles_template_and_vars() -> None:
    job = spec(
        {"prompt": "check auth", "prompt_vars": {"focus": "security", "max_findings": 3}},
        profile_=profile("code-review"),
    )
    prompt = files(job)[PROMPT_PATH].decode()
    assert "focusing on security" in prompt
    assert "check auth" in prompt
    assert "at most 3 findings" in prompt


# --- files, env, hooks ----------------------------------------------------------------------


def test_system_prompt_and_mcp_config_travel_as_files() -> None:
    mcp = {"mcpServers": {"docs": {"command": "docs-server", "args": ["--ro"]}}}
    job = spec({"system_prompt": "be terse", "mcp_config": mcp})
    written = files(job)
    system_path, mcp_path = OPTION_FILES["system_prompt"], OPTION_FILES["mcp_config"]
    assert written[system_path] == b"be terse"
    assert json.loads(written[mcp_path]) == mcp
    assert flag_value(job.argv, "--append-system-prompt-file") == system_path
    assert flag_value(job.argv, "--mcp-config") == mcp_path
    assert "be terse" not in job.argv


def test_options_an_engine_has_no_flag_for_are_left_out() -> None:
    job = spec({"system_prompt": "be terse", "max_turns": 5}, engine_=engine("codex"))
    assert OPTION_FILES["system_prompt"] not in files(job)
    assert "--max-turns" not in job.argv


def test_claude_md_is_rendered_with_its_vars() -> None:
    job = spec({"claude_md_vars": {"project": "Parpaing tower"}})
    claude_md = files(job)[CLAUDE_MD_PATH].decode()
    assert "`default` profile" in claude_md
    assert "Parpaing tower" in claude_md
    assert next(f.mode for f in job.files if f.path == CLAUDE_MD_PATH) == 0o644


def test_no_claude_md_without_a_template() -> None:
    assert CLAUDE_MD_PATH not in files(spec(profile_=Profile(name="bare"), templates={}))


def test_env_carries_the_gateway_and_the_job_token_never_a_provider_key() -> None:
    # The worker's loopback forwarder to the gateway's socket, wherever tower finds it.
    job = spec(settings=Settings(gateway_url="http://gateway.test:8080"))
    assert job.env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:4480/anthropic"
    assert job.env["ANTHROPIC_API_KEY"] == TOKEN


def test_hooks_come_from_the_profile() -> None:
    hooked = Profile.model_validate({"name": "hooked", "hooks": {"pre": "git init", "post": "ls"}})
    job = spec(profile_=hooked, templates={})
    assert (job.pre_hook, job.post_hook) == ("git init", "ls")
    assert (spec().pre_hook, spec().post_hook) == (None, None)


def test_dry_run_and_identity() -> None:
    job = spec({"dry_run": True})
    assert job.dry_run is True
    assert job.job_id == JOB_ID
    assert job.cwd == "/workspace"
    assert spec().dry_run is False


# --- limits --------------------------------------------------------------------------------


def test_profile_resources_override_the_settings() -> None:
    settings = Settings(worker_mem_limit="4g", worker_cpu_limit=3.0, max_result_size=4096)
    job = spec(profile_=profile("code-review"), settings=settings)
    assert (job.shape.memory, job.shape.cpus, job.timeout_seconds) == ("1g", 1.0, 900)
    assert job.output_limit == 4096


def test_settings_apply_when_the_profile_sets_no_resources() -> None:
    settings = Settings(
        worker_mem_limit="3g",
        worker_cpu_limit=1.5,
        worker_timeout_seconds=77,
        worker_pids_limit=128,
        worker_runtime="crun",
        gateway_socket_volume="gw-socket",
        worker_image="worker:test",
    )
    job = spec(profile_=Profile(name="bare"), templates={}, settings=settings)
    shape = job.shape
    assert (shape.memory, shape.cpus, job.timeout_seconds) == ("3g", 1.5, 77)
    assert (shape.pids_limit, shape.runtime, shape.gateway_socket, shape.image) == (
        128,
        "crun",
        "gw-socket",
        "worker:test",
    )


def test_profile_resources_above_the_maxima_are_clamped_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    greedy = parse_profile(
        "greedy", '[resources]\nmemory = "64g"\ncpus = 64\ntimeout_seconds = 86400\n'
    )
    with caplog.at_level(logging.WARNING, logger="tower.execution.spec"):
        job = spec(profile_=greedy, templates={}, settings=Settings())
    assert (job.shape.memory, job.shape.cpus, job.timeout_seconds) == ("8g", 4.0, 7200)
    for what in ("memory 64g", "cpus 64", "timeout_seconds 86400"):
        assert what in caplog.text
    assert "greedy" in caplog.text


def test_settings_defaults_above_the_maxima_are_clamped_too() -> None:
    # WORKER_MEM_LIMIT=0 is Docker's "unlimited": above any maximum.
    settings = Settings(
        worker_mem_limit="0",
        worker_cpu_limit=16,
        worker_timeout_seconds=86400,
        worker_max_memory="1g",
        worker_max_cpus=1.5,
        worker_max_timeout_seconds=600,
    )
    job = spec(profile_=Profile(name="bare"), templates={}, settings=settings)
    assert (job.shape.memory, job.shape.cpus, job.timeout_seconds) == ("1g", 1.5, 600)


def test_limits_at_or_under_the_maxima_are_kept_without_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    exact = parse_profile(
        "exact", '[resources]\nmemory = "8192m"\ncpus = 4\ntimeout_seconds = 7200\n'
    )
    with caplog.at_level(logging.WARNING, logger="tower.execution.spec"):
        job = spec(profile_=exact, templates={}, settings=Settings())
    assert (job.shape.memory, job.shape.cpus, job.timeout_seconds) == ("8192m", 4.0, 7200)
    assert caplog.text == ""


# --- refusals ----------------------------------------------------------------------------------


def test_a_missing_template_is_invalid() -> None:
    with pytest.raises(Invalid, match="'default' does not exist"):
        spec(templates={})


def test_a_failing_template_is_invalid() -> None:
    broken = TEMPLATES | {"default": Template(name="default", source="{{ 1 // 0 }}")}
    with pytest.raises(Invalid, match="template"):
        spec(templates=broken)


def test_an_undeclared_prompt_var_is_invalid() -> None:
    with pytest.raises(Invalid, match="unknown variable 'nope'"):
        spec({"prompt_vars": {"nope": 1}})


# --- the prompt whole -----------------------------------------------------------------------------


def test_a_100_million_character_prompt_is_byte_identical_in_the_bundle() -> None:
    prompt = ("0123456789abcdef{{ x }}é\n" * 4_000_000)[:100_000_000]
    assert len(prompt) == 100_000_000
    bare = Profile.model_validate({"name": "bare", "prompt_template": "whole"})
    job = spec(
        {"prompt": prompt},
        profile_=bare,
        templates={"whole": Template(name="whole", source="{{ prompt }}")},
    )
    with tarfile.open(fileobj=io.BytesIO(bundle_tar(job))) as tar:
        member = tar.extractfile("job/files/0")
        assert member is not None
        carried = member.read()
    expected = prompt.encode("utf-8")
    assert len(carried) == len(expected)
    assert hashlib.sha256(carried).digest() == hashlib.sha256(expected).digest()


# --- sessions (docs/sessions.md) --------------------------------------------------------------


def test_a_continued_turn_gets_the_engines_resume_args_after_its_fixed_args() -> None:
    link = {"session_id": JOB_ID, "parent_job_id": JOB_ID, "turn": 2}
    continued = spec({"session": link}).argv
    first = spec().argv
    claude = engine("claude-code")
    fixed = 1 + len(claude.args)
    assert claude.resume is not None
    assert continued[fixed : fixed + len(claude.resume.args)] == tuple(claude.resume.args)
    assert continued[:fixed] + continued[fixed + len(claude.resume.args) :] == first
    assert "--continue" not in first


def test_an_engine_that_resumes_has_its_state_captured_by_every_turn() -> None:
    assert spec().session_state == (".claude/projects",)
    document = json.loads(_spec_json(bundle_tar(spec())))
    assert document["session_state"] == [".claude/projects"]
    assert spec(engine_=engine("codex")).session_state == ()


def _spec_json(bundle: bytes) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(bundle)) as archive:
        member = archive.extractfile("job/spec.json")
        assert member is not None
        return member.read()
