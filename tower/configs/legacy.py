"""Parpaing's config format (enixCode/parpaing-agent-worker) converted to ours.

Pure functions: a Parpaing profile or engine (its TOML, parsed) becomes the text of ours,
starting with a comment saying where it came from. What has no equivalent here is refused
with a LegacyInvalid naming each Parpaing key at fault, so nothing is dropped silently.
A Parpaing template is plain Jinja2: it is stored as it is, under the name
`template_name` gives its path (`prompts/x.md.j2` is `prompts-x`).
"""

from __future__ import annotations

import json
import re
from pathlib import PurePosixPath
from typing import Any

from tower.errors import Invalid

ORIGIN = "# Converted from a Parpaing {kind} (the format of enixCode/parpaing-agent-worker)."
# Output formats Parpaing's [agent] output_format may name that jobs use by default here.
DEFAULT_OUTPUT_FORMAT = "json"
# What each credential a Parpaing engine's [env] auth lists becomes: the gateway's URL for
# the provider and the per-job token (provider keys never reach a worker).
GATEWAY_ENV: dict[str, dict[str, str]] = {
    "ANTHROPIC_API_KEY": {
        "ANTHROPIC_BASE_URL": "{gateway_url}/anthropic",
        "ANTHROPIC_API_KEY": "{job_token}",
    },
    "CLAUDE_CODE_OAUTH_TOKEN": {},  # a subscription login: the gateway's key replaces it
    "OPENAI_API_KEY": {
        "OPENAI_BASE_URL": "{gateway_url}/openai/v1",
        "OPENAI_API_KEY": "{job_token}",
    },
    "GEMINI_API_KEY": {
        "GOOGLE_GEMINI_BASE_URL": "{gateway_url}/gemini",
        "GEMINI_API_KEY": "{job_token}",
    },
}
OUTPUT_FORMATS = {"json": "json", "stream-json": "jsonl", "jsonl": "jsonl", "text": "text"}
_VAR_TYPES = {bool: "boolean", int: "integer", float: "float", str: "string"}


class LegacyInvalid(Invalid):
    """A Parpaing config with keys that have no equivalent here (422)."""


def is_parpaing(kind: str, data: dict[str, Any]) -> bool:
    """Parpaing's files are all tables ([agent], [engine], [command]); ours have top-level
    keys, and no profile of ours has [agent], [tools] or [claude_md]."""
    if kind == "profile":
        return any(key in data for key in ("agent", "tools", "claude_md")) or isinstance(
            data.get("prompt"), dict
        )
    if kind == "engine":
        return isinstance(data.get("engine"), dict) or "command" in data
    return False


def template_name(path: str) -> str:
    """Our name for the template at `path` under Parpaing's templates/ directory:
    its directories and file name up to the first dot, joined with `-`."""
    parts = PurePosixPath(path).parts
    if not parts:
        raise LegacyInvalid(f"template path {path!r} is empty", field="content")
    name = "-".join([*parts[:-1], parts[-1].split(".", 1)[0]])
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name) or ".." in parts:
        raise LegacyInvalid(
            f"template path {path!r} gives no valid name ({name!r})", field="content"
        )
    return name


# --- profiles -------------------------------------------------------------------------


def convert_profile(name: str, data: dict[str, Any], hooks: dict[str, str] | None = None) -> str:
    """Our profile's TOML text for Parpaing profile `data`. `hooks` maps the file names
    of Parpaing's hooks/ directory to their scripts (an import has them; a PUT does not)."""
    problems: list[str] = []
    agent = _table(data, "agent", problems)
    tools = _table(data, "tools", problems)
    prompt = _table(data, "prompt", problems)
    claude_md = _table(data, "claude_md", problems)
    resources = _table(data, "resources", problems)
    _unknown(
        data,
        {"agent", "tools", "prompt", "claude_md", "resources", "hooks", "plugins"},
        "",
        problems,
    )
    _unknown(
        agent,
        {"id", "description", "model", "max_turns", "max_budget_usd", "output_format"},
        "agent.",
        problems,
    )
    _unknown(tools, {"allowed"}, "tools.", problems)
    _unknown(prompt, {"template", "variables"}, "prompt.", problems)
    _unknown(claude_md, {"template", "variables"}, "claude_md.", problems)
    _unknown(resources, {"timeout"}, "resources.", problems)
    if _table(data, "plugins", problems).get("enabled"):
        problems.append("plugins.enabled: Claude Code plugins are not installed in workers here")
    output_format = agent.get("output_format", DEFAULT_OUTPUT_FORMAT)
    if output_format != DEFAULT_OUTPUT_FORMAT:
        problems.append(
            f"agent.output_format: a profile here always uses {DEFAULT_OUTPUT_FORMAT!r}; "
            f"send output_format={output_format!r} with each job instead"
        )
    top: dict[str, Any] = {"name": name, "compat": "parpaing"}
    for key in ("description", "model", "max_turns", "max_budget_usd"):
        if key in agent:
            top[key] = agent[key]
    if "allowed" in tools:
        top["allowed_tools"] = tools["allowed"]
    if "template" in prompt:
        top["prompt_template"] = _template_ref(prompt["template"], "prompt.template", problems)
    if "template" in claude_md:
        top["claude_md_template"] = _template_ref(
            claude_md["template"], "claude_md.template", problems
        )
    tables: dict[str, dict[str, Any]] = {}
    variables = _prompt_vars(_table(prompt, "variables", problems), problems)
    md_vars = dict(_table(claude_md, "variables", problems))
    if "timeout" in resources:
        tables["resources"] = {"timeout_seconds": resources["timeout"]}
        # Parpaing's CLAUDE.md template is given the job's timeout; so is this one.
        md_vars.setdefault("timeout", str(resources["timeout"]))
    if md_vars:
        tables["claude_md_vars"] = md_vars
    hook_table = _hooks(_table(data, "hooks", problems), hooks, problems)
    if hook_table:
        tables["hooks"] = hook_table
    _refuse(f"profile {name!r}", problems)
    body = _toml_keys(top) + "".join(_toml_table(k, v) for k, v in tables.items())
    body += "".join(_toml_table(f"vars.{var}", spec) for var, spec in variables.items())
    return ORIGIN.format(kind="profile") + "\n" + body


def _prompt_vars(variables: dict[str, Any], problems: list[str]) -> dict[str, dict[str, Any]]:
    converted = {}
    for var, spec in variables.items():
        where = f"prompt.variables.{var}"
        if not isinstance(spec, dict):  # Parpaing's older flat form: the value is the default
            kind = _VAR_TYPES.get(type(spec))
            if kind is None:
                problems.append(f"{where}: a {type(spec).__name__} cannot be a variable's value")
                continue
            converted[var] = {"type": kind, "default": spec}
            continue
        _unknown(
            spec, {"type", "default", "required", "description", "enum"}, where + ".", problems
        )
        item = {k: spec[k] for k in ("type", "description", "enum", "default") if k in spec}
        # Parpaing applies a default before it checks `required`: with a default, a
        # variable is in effect optional. Only one without a default stays required.
        if spec.get("required") and "default" not in spec:
            item["required"] = True
        converted[var] = item
    return converted


def _hooks(
    table: dict[str, Any], files: dict[str, str] | None, problems: list[str]
) -> dict[str, str]:
    """Parpaing's hook is a script, or on one line the name of a file in its hooks/."""
    converted = {}
    for key, value in table.items():
        if key not in ("pre", "post"):
            problems.append(f"hooks.{key}: unknown hook (pre and post exist)")
        elif not isinstance(value, str) or "\n" in value.strip():
            converted[key] = value
        elif files is not None and value.strip() in files:
            converted[key] = files[value.strip()]
        else:
            problems.append(
                f"hooks.{key}: names the file hooks/{value.strip()}, which is not here; "
                "import the directory that holds it, or put the script inline"
            )
    return converted


def _template_ref(path: Any, where: str, problems: list[str]) -> str | None:
    if not isinstance(path, str):
        problems.append(f"{where}: must be a path under templates/")
        return None
    try:
        return template_name(path)
    except LegacyInvalid as error:
        problems.append(f"{where}: {error.message}")
        return None


# --- engines --------------------------------------------------------------------------


def convert_engine(name: str, data: dict[str, Any]) -> str:
    """Our engine's TOML text for Parpaing engine `data`. Parpaing passes the prompt in
    argv; here the worker reads it from a file into that argument (arg-from-file)."""
    problems: list[str] = []
    engine = _table(data, "engine", problems)
    command = _table(data, "command", problems)
    output = _table(data, "output", problems)
    env = _table(data, "env", problems)
    _unknown(data, {"engine", "command", "output", "env"}, "", problems)
    _unknown(engine, {"id", "name", "description"}, "engine.", problems)
    _unknown(
        command, {"binary", "prompt_flag", "static_args", "map", "list_join"}, "command.", problems
    )
    _unknown(output, {"mode", "format"}, "output.", problems)
    _unknown(env, {"auth", "required"}, "env.", problems)
    if output.get("mode", "stdout") != "stdout":
        problems.append(f"output.mode: {output['mode']!r}: only stdout output is read here")
    fmt = output.get("format", "json")
    if fmt not in OUTPUT_FORMATS:
        problems.append(f"output.format: {fmt!r} is not one of {sorted(OUTPUT_FORMATS)}")
    flag = command.get("prompt_flag", "-p")
    top: dict[str, Any] = {
        "id": name,
        "name": engine.get("name", name),
        "description": engine.get("description", ""),
        "binary": command.get("binary", name),
        "args": list(command.get("static_args", [])),
        "output": OUTPUT_FORMATS.get(fmt, "json"),
    }
    tables: dict[str, dict[str, Any]] = {
        "prompt": {"via": "arg-from-file", "args": [flag, "{prompt}"] if flag else ["{prompt}"]}
    }
    joins = _table(command, "list_join", problems)
    for option, cli_flag in _table(command, "map", problems).items():
        table: dict[str, Any] = {"args": [cli_flag, "{value}"]}
        if option == "allowed_tools":
            table["join"] = joins.get(option, ",")  # Parpaing joins every list, with "," by default
        tables[f"flags.{option}"] = table
    tables["env"] = _engine_env(env.get("auth", env.get("required", [])), problems)
    _refuse(f"engine {name!r}", problems)
    body = _toml_keys(top) + "".join(_toml_table(k, v) for k, v in tables.items())
    return ORIGIN.format(kind="engine") + "\n" + body


def _engine_env(auth: Any, problems: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for variable in auth if isinstance(auth, list) else [auth]:
        if variable in GATEWAY_ENV:
            env.update(GATEWAY_ENV[variable])
        else:
            problems.append(
                f"env.auth: {variable!r} is no provider key the gateway knows "
                f"({', '.join(GATEWAY_ENV)})"
            )
    return env


# --- helpers --------------------------------------------------------------------------


def _table(data: dict[str, Any], key: str, problems: list[str]) -> dict[str, Any]:
    value = data.get(key, {})
    if isinstance(value, dict):
        return value
    problems.append(f"{key}: must be a table")
    return {}


def _unknown(table: dict[str, Any], known: set[str], prefix: str, problems: list[str]) -> None:
    for key in sorted(set(table) - known):
        problems.append(f"{prefix}{key}: no equivalent here")


def _refuse(what: str, problems: list[str]) -> None:
    if problems:
        raise LegacyInvalid(
            f"Parpaing {what} cannot be converted: {'; '.join(problems)}", field="content"
        )


def _toml_keys(values: dict[str, Any]) -> str:
    return "".join(f"{_toml_key(k)} = {_toml_value(v)}\n" for k, v in values.items())


def _toml_table(name: str, values: dict[str, Any]) -> str:
    header = ".".join(_toml_key(part) for part in name.split("."))
    return f"\n[{header}]\n" + _toml_keys(values)


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_value(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # A JSON string is a TOML basic string, but for DEL, which TOML wants escaped.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return (
            "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
        )
    raise LegacyInvalid(f"a {type(value).__name__} value cannot be written", field="content")
