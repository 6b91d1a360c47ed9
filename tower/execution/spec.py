"""From a claimed job's request, its profile and engine, to exactly what the worker runs.

Pure: no I/O, so every rule here is unit-tested without Docker. Option precedence is
request > profile > defaults. Values too long or too structured for argv (the prompt,
the system prompt, the MCP config) travel as files the worker writes before it starts
the engine; argv then carries only their paths.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tower.configs.models import Engine, OptionValue, Profile, Template
from tower.configs.render import render_claude_md, render_prompt
from tower.errors import Invalid
from tower.execution import protocol
from tower.execution.slots import ContainerShape
from tower.settings import Settings, egress_socket_volume, gateway_socket_volume, memory_bytes

log = logging.getLogger(__name__)
WORKSPACE = "/workspace"
SCRATCH = "/tmp/parpaing"
PROMPT_PATH = f"{SCRATCH}/prompt.md"
CLAUDE_MD_PATH = "/home/worker/.claude/CLAUDE.md"
# Options that reach the engine through a file; their flags use {file}.
OPTION_FILES = {"system_prompt": f"{SCRATCH}/system-prompt.md", "mcp_config": f"{SCRATCH}/mcp.json"}
PRIVATE = 0o600
DEFAULT_OUTPUT_FORMAT = "json"


@dataclass(frozen=True)
class SpecFile:
    """A file the worker writes, byte for byte, before anything runs."""

    path: str
    content: bytes
    mode: int = PRIVATE


@dataclass(frozen=True)
class JobSpec:
    job_id: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    cwd: str
    files: tuple[SpecFile, ...]
    # The file piped to the engine's stdin; None means the engine reads /dev/null.
    stdin: str | None
    # Where the prompt is, for engines that take it as one argv element ({prompt}).
    prompt_file: str
    pre_hook: str | None
    post_hook: str | None
    dry_run: bool
    timeout_seconds: int
    output_limit: int
    # The engine's requested output format (json, stream-json, text), for parsing.
    output_format: str
    shape: ContainerShape
    # The bytes of artifacts (files created or changed in the workspace, the diff) the
    # worker sends back (MAX_ARTIFACT_BYTES); 0 for none.
    artifact_limit: int = 0
    # The commit tower cloned into the workspace (a repository job): what the diff is
    # against. Set by the runner from ClaimedJob.workspace_commit.
    workspace_commit: str | None = None
    # The engine's state paths under $HOME (its [resume] table): the worker captures
    # them with the final workspace for a later turn (docs/sessions.md); () for none.
    session_state: tuple[str, ...] = ()


def build_spec(
    request: Mapping[str, Any],
    profile: Profile,
    engine: Engine,
    templates: Mapping[str, Template],
    settings: Settings,
    job_id: str,
    job_token: str,
    attempt: int = 1,
) -> JobSpec:
    """Everything the worker needs for one job. Raises Invalid when the profile or its
    templates cannot produce it (the runner reports that as a failed job)."""
    options = job_options(request, profile)
    option_files = _option_files(options, engine)
    prompt = _prompt_file(request, profile, templates)
    files = (prompt, *option_files.values(), *_claude_md(request, profile, templates))
    paths = {option: file.path for option, file in option_files.items()}
    return JobSpec(
        job_id=job_id,
        # Engines reach the gateway through the worker's loopback forwarder, wherever
        # the gateway itself is (settings.gateway_url is where tower finds it).
        argv=_resumed(
            request, engine, _command(engine, options, paths, protocol.WORKER_GATEWAY_URL)
        ),
        env={
            **engine.environment(protocol.WORKER_GATEWAY_URL, job_token),
            **proxy_environment(request, job_id, attempt, job_token),
        },
        cwd=WORKSPACE,
        files=files,
        stdin=PROMPT_PATH if engine.prompt.via == "stdin" else None,
        prompt_file=PROMPT_PATH,
        pre_hook=profile.hooks.pre,
        post_hook=profile.hooks.post,
        dry_run=bool(request.get("dry_run", False)),
        timeout_seconds=job_timeout(profile, settings),
        output_limit=settings.max_result_size,
        artifact_limit=settings.max_artifact_bytes,
        output_format=str(options["output_format"]),
        shape=container_shape(profile, settings),
        session_state=tuple(engine.resume.state) if engine.resume else (),
    )


def proxy_environment(
    request: Mapping[str, Any], job_id: str, attempt: int, job_token: str
) -> dict[str, str]:
    """For a job with an egress allow-list (the list submit stored in its request), the
    proxy in every variable HTTP clients read, with the attempt's credentials: user
    `<job id>.<attempt>`, password its token (docs/egress.md). The gateway's loopback
    address is left out of it. None for any other job: it has no way out."""
    egress = request.get("egress")
    if not isinstance(egress, Mapping) or not egress.get("allow"):
        return {}
    proxy = f"http://{job_id}.{attempt}:{job_token}@127.0.0.1:{protocol.EGRESS_PORT}"
    direct = "127.0.0.1,localhost"
    names = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")
    return {**dict.fromkeys(names, proxy), "NO_PROXY": direct, "no_proxy": direct}


def _resumed(request: Mapping[str, Any], engine: Engine, argv: list[str]) -> tuple[str, ...]:
    """A continued turn (its stored request names its session) gets the engine's resume
    args right after its fixed args: the worker restored the conversation they resume."""
    if not request.get("session") or engine.resume is None:
        return tuple(argv)
    fixed = 1 + len(engine.args)
    return (*argv[:fixed], *engine.resume.args, *argv[fixed:])


def job_options(request: Mapping[str, Any], profile: Profile) -> dict[str, OptionValue | None]:
    """The engine options of a job: the request's where given, else the profile's."""
    return {
        "model": _first(request.get("model"), profile.model),
        "max_turns": _first(request.get("max_turns"), profile.max_turns),
        "allowed_tools": _first(request.get("allowed_tools"), profile.allowed_tools),
        "system_prompt": _first(request.get("system_prompt")),
        "output_format": _first(request.get("output_format"), DEFAULT_OUTPUT_FORMAT),
        "max_budget_usd": _first(request.get("max_budget_usd"), profile.max_budget_usd),
        "mcp_config": _mcp_json(request.get("mcp_config")),
    }


def _first(*candidates: Any) -> Any:
    """The first value given. None and an empty list are "not given": an empty list is
    the API's default for allowed_tools, so it cannot mean "no tools"."""
    return next((value for value in candidates if value is not None and value != []), None)


def container_shape(profile: Profile, settings: Settings) -> ContainerShape:
    return ContainerShape(
        image=settings.worker_image,
        memory=_job_memory(profile, settings),
        cpus=_job_cpus(profile, settings),
        pids_limit=settings.worker_pids_limit,
        runtime=settings.worker_runtime,
        gateway_socket=gateway_socket_volume(settings),
        egress_socket=egress_socket_volume(settings),
    )


# The operator's maxima (WORKER_MAX_*) bound what a profile, or a default, may ask for.


def job_timeout(profile: Profile, settings: Settings) -> int:
    wanted = profile.resources.timeout_seconds or settings.worker_timeout_seconds
    if wanted > settings.worker_max_timeout_seconds:
        source = f"profile {profile.name!r}"
        _clamped(source, "timeout_seconds", wanted, settings.worker_max_timeout_seconds)
        return int(settings.worker_max_timeout_seconds)
    return int(wanted)


def _job_memory(profile: Profile, settings: Settings) -> str:
    wanted = profile.resources.memory or settings.worker_mem_limit
    return bounded_memory(wanted, settings, f"profile {profile.name!r}")


def _job_cpus(profile: Profile, settings: Settings) -> float:
    wanted = profile.resources.cpus or settings.worker_cpu_limit
    return bounded_cpus(wanted, settings, f"profile {profile.name!r}")


def bounded_memory(wanted: str, settings: Settings, source: str) -> str:
    """`wanted` within WORKER_MAX_MEMORY; `source` names who asked, in the warning."""
    size = memory_bytes(wanted)
    # 0 is Docker's "unlimited", above any maximum; a size Docker cannot read is left for
    # Docker to refuse, with its own message.
    if size is not None and (size == 0 or size > (memory_bytes(settings.worker_max_memory) or 0)):
        _clamped(source, "memory", wanted, settings.worker_max_memory)
        return settings.worker_max_memory
    return wanted


def bounded_cpus(wanted: float, settings: Settings, source: str) -> float:
    if wanted > settings.worker_max_cpus:
        _clamped(source, "cpus", wanted, settings.worker_max_cpus)
        return float(settings.worker_max_cpus)
    return float(wanted)


def _clamped(source: str, what: str, wanted: object, limit: object) -> None:
    log.warning("%s: %s %s is above the operator's maximum; using %s", source, what, wanted, limit)


def _mcp_json(config: Any) -> str | None:
    if config is None:
        return None
    return json.dumps(config, ensure_ascii=False, allow_nan=False)


def _option_files(options: Mapping[str, OptionValue | None], engine: Engine) -> dict[str, SpecFile]:
    """Files for the options this engine takes as {file}; options it has no flag for
    are left out, as every engine-specific option is (e.g. max_turns for Codex)."""
    files = {}
    for option, path in OPTION_FILES.items():
        value = options.get(option)
        flag = engine.flags.get(option)
        if value is None or flag is None or not any("{file}" in arg for arg in flag.args):
            continue
        files[option] = SpecFile(path, _utf8(str(value), option))
    return files


def _command(
    engine: Engine,
    options: Mapping[str, OptionValue | None],
    paths: Mapping[str, str],
    gateway_url: str,
) -> list[str]:
    try:
        return engine.command(options, paths, PROMPT_PATH, gateway_url)
    except ValueError as error:
        raise Invalid(f"engine {engine.id!r}: {error}", field="engine") from None


def _prompt_file(
    request: Mapping[str, Any], profile: Profile, templates: Mapping[str, Template]
) -> SpecFile:
    source = _template_source(profile.prompt_template, templates)
    text = render_prompt(
        profile, source, str(request.get("prompt") or ""), request.get("prompt_vars") or {}
    )
    return SpecFile(PROMPT_PATH, _utf8(text, "prompt"))


def _claude_md(
    request: Mapping[str, Any], profile: Profile, templates: Mapping[str, Template]
) -> list[SpecFile]:
    source = _template_source(profile.claude_md_template, templates)
    if source is None:
        return []
    text = render_claude_md(profile, source, request.get("claude_md_vars") or {})
    return [SpecFile(CLAUDE_MD_PATH, _utf8(text, "claude_md"), 0o644)]


def _template_source(name: str | None, templates: Mapping[str, Template]) -> str | None:
    if name is None:
        return None
    template = templates.get(name)
    if template is None:
        raise Invalid(f"the profile's template {name!r} does not exist", field="profile")
    return template.source


def _utf8(text: str, what: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as error:
        # Only lone surrogates fail; the API refuses them, so this is a template's doing.
        raise Invalid(f"{what} is not valid text: {error.reason}", field="profile") from None
