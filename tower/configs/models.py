"""Parsed profiles, engines and templates: the shapes the TOML files must have.

Models are strict (no silent coercion of "30" into 30) and forbid unknown keys, so a
typo in a config is reported on write instead of being ignored at run time.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tower.configs.egress import MAX_ENTRIES, check_entries
from tower.configs.values import VarValue, check_value
from tower.settings import memory_bytes

NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
# The profile of a job that names none (POST /jobs), whose shape the warm pool keeps.
DEFAULT_PROFILE = "default"
VAR_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
KINDS = ("profile", "engine", "template")

# Job options an engine may map to command-line flags (the names JobSpec resolves).
FLAG_OPTIONS = (
    "model",
    "max_turns",
    "allowed_tools",
    "system_prompt",
    "output_format",
    "max_budget_usd",
    "mcp_config",
)
# Placeholders allowed in argv: {value} is the option's value, {file} the path of a
# file the worker writes the value to (for values too long or too structured for argv).
ARG_PLACEHOLDERS = ("{value}", "{file}")
# Placeholders allowed in engine env values, filled per job by the runner.
ENV_PLACEHOLDERS = ("{gateway_url}", "{job_token}")
# What a job option may hold when it becomes argv.
OptionValue = str | int | float | bool | list[str]
# Names a template sees besides the profile's variables; a variable may not shadow them.
RESERVED_VARS = ("prompt", "profile")


class ConfigModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# --- profiles ------------------------------------------------------------------------


class VarSpec(ConfigModel):
    type: Literal["string", "integer", "float", "boolean"]
    description: str = ""
    required: bool = False
    default: VarValue | None = None
    enum: list[VarValue] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> VarSpec:
        if self.required and self.default is not None:
            raise ValueError("a required variable cannot have a default")
        for value in self.enum or ():
            check_value(self.type, value)
        if self.enum is not None and not self.enum:
            raise ValueError("enum must list at least one value")
        if self.default is not None:
            check_value(self.type, self.default)
            if self.enum is not None and self.default not in self.enum:
                raise ValueError(f"default {self.default!r} is not one of enum {self.enum}")
        return self


class Resources(ConfigModel):
    memory: str | None = Field(default=None, pattern=r"^[0-9]+(\.[0-9]+)?[bkmgBKMG]?$")
    cpus: float | None = Field(default=None, gt=0, le=64)
    timeout_seconds: int | None = Field(default=None, ge=1, le=86400)

    @field_validator("memory")
    @classmethod
    def _some_memory(cls, value: str | None) -> str | None:
        # Docker reads a zero limit as "unlimited": a profile may lower limits, not lift them.
        if value is not None and not memory_bytes(value):
            raise ValueError("memory must be greater than 0")
        return value


class Hooks(ConfigModel):
    """Shell scripts the worker runs around the engine, inside the container."""

    pre: str | None = None
    post: str | None = None


class Egress(ConfigModel):
    """What the job's processes may reach through the egress proxy (docs/egress.md):
    host, host:port, *.suffix entries. Empty: nothing, the worker's default."""

    allow: list[str] = Field(default=[], max_length=MAX_ENTRIES)

    @field_validator("allow")
    @classmethod
    def _entries(cls, value: list[str]) -> list[str]:
        return check_entries(value)


class Profile(ConfigModel):
    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    model: str | None = None
    engine: str | None = Field(default=None, pattern=NAME_PATTERN)
    allowed_tools: list[str] = []
    max_turns: int | None = Field(default=None, ge=1, le=100)
    # A job's budget unless it sets its own (the job's own range).
    max_budget_usd: float | None = Field(default=None, gt=0, le=50)
    prompt_template: str | None = Field(default=None, pattern=NAME_PATTERN)
    claude_md_template: str | None = Field(default=None, pattern=NAME_PATTERN)
    vars: dict[str, VarSpec] = {}
    # Defaults of the CLAUDE.md template's `vars`; a job's claude_md_vars win.
    claude_md_vars: dict[str, VarValue] = {}
    # "parpaing": converted from Parpaing's format, so its templates keep Parpaing's rules
    # (tower/configs/legacy.py): a job's prompt replaces the prompt template, names a
    # template reads but nobody gave are empty, and CLAUDE.md variables are bare names.
    compat: Literal["parpaing"] | None = None
    resources: Resources = Resources()
    hooks: Hooks = Hooks()
    egress: Egress = Egress()

    @field_validator("vars")
    @classmethod
    def _var_names(cls, value: dict[str, VarSpec]) -> dict[str, VarSpec]:
        for name in value:
            if not re.fullmatch(VAR_NAME_PATTERN, name):
                raise ValueError(f"variable name {name!r} must be an identifier")
            if name in RESERVED_VARS:
                raise ValueError(f"variable name {name!r} is reserved")
        return value

    def template_names(self) -> list[str]:
        return [name for name in (self.prompt_template, self.claude_md_template) if name]


# --- engines -------------------------------------------------------------------------


def _check_placeholders(args: list[str], allowed: tuple[str, ...]) -> list[str]:
    for arg in args:
        for found in re.findall(r"\{[^{}]*\}", arg):
            if found not in allowed:
                raise ValueError(f"unknown placeholder {found} in {arg!r}")
    return args


class Flag(ConfigModel):
    """How one job option becomes argv: `args` when set, `values` for a per-value mapping."""

    args: list[str] = []
    values: dict[str, list[str]] = {}
    # A list option (allowed_tools) is joined into one {value}; without `join`,
    # `args` is repeated for each item.
    join: str | None = None

    @field_validator("args")
    @classmethod
    def _args(cls, value: list[str]) -> list[str]:
        return _check_placeholders(value, ARG_PLACEHOLDERS)

    @field_validator("values")
    @classmethod
    def _values(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for args in value.values():
            _check_placeholders(args, ())
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> Flag:
        if not self.args and not self.values:
            raise ValueError("a flag needs `args` or `values`")
        return self

    def argv(self, value: OptionValue, file: str | None = None) -> list[str]:
        """The arguments for `value`; `file` is where the worker put it, for {file}."""
        if isinstance(value, bool):
            return list(self.args) if value else []
        if isinstance(value, list):
            if self.join is None:
                return [arg for item in value for arg in self.argv(item, file)]
            value = self.join.join(value)
        text = str(value)
        if text in self.values:
            return list(self.values[text])
        if any("{file}" in arg for arg in self.args) and file is None:
            raise ValueError("this flag passes its value in a file; give its path")
        return [arg.replace("{value}", text).replace("{file}", file or "") for arg in self.args]


class PromptDelivery(ConfigModel):
    """How the prompt reaches the engine. Never as a plain argv string: argv has limits.

    stdin: piped to the engine. file: written to a file, `args` carry {file}.
    arg-from-file: the worker reads the file into one argv element ({prompt}) and fails
    the job, rather than truncating, when the prompt exceeds the kernel's argv limit.
    """

    via: Literal["stdin", "file", "arg-from-file"]
    args: list[str] = []

    @model_validator(mode="after")
    def _placeholder_matches_mode(self) -> PromptDelivery:
        needed = {"stdin": None, "file": "{file}", "arg-from-file": "{prompt}"}[self.via]
        _check_placeholders(self.args, (needed,) if needed else ())
        if needed and not any(needed in arg for arg in self.args):
            raise ValueError(f"prompt via {self.via} needs {needed} in args")
        return self


class Resume(ConfigModel):
    """How an engine continues its own conversation (docs/sessions.md): the args added
    after its fixed args on a continued turn, and the paths under $HOME holding its state,
    captured at the end of every turn and restored at the start of the next."""

    args: list[str] = Field(min_length=1)
    state: list[str] = Field(min_length=1)

    @field_validator("state")
    @classmethod
    def _relative(cls, value: list[str]) -> list[str]:
        for path in value:
            parts = path.split("/")
            if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts):
                raise ValueError(f"state path {path!r} must be a plain path relative to $HOME")
        return value


class Engine(ConfigModel):
    id: str = Field(pattern=NAME_PATTERN)
    name: str = Field(min_length=1)
    description: str = ""
    binary: str = Field(pattern=r"^[A-Za-z0-9_./-]+$")
    args: list[str] = []
    version_args: list[str] = ["--version"]
    prompt: PromptDelivery
    output: Literal["json", "jsonl", "text"]
    flags: dict[str, Flag] = {}
    env: dict[str, str] = {}
    # None: the engine cannot resume; POST /jobs/{id}/continue answers 409.
    resume: Resume | None = None

    def command(
        self,
        options: Mapping[str, OptionValue | None],
        files: Mapping[str, str],
        prompt_file: str,
        gateway_url: str = "",
    ) -> list[str]:
        """argv for a job: binary, fixed args, the flags of the options set (in file
        order), then the prompt's args. `files` maps an option to the file holding its
        value, for {file} flags; {prompt} is left for the worker (arg-from-file).
        {gateway_url} in the fixed args is for CLIs that take their base URL only as an
        option (Codex ignores OPENAI_BASE_URL)."""
        fixed = [arg.replace("{gateway_url}", gateway_url) for arg in self.args]
        argv = [self.binary, *fixed]
        for option, flag in self.flags.items():
            value = options.get(option)
            if value is not None:
                argv += flag.argv(value, files.get(option))
        return argv + [arg.replace("{file}", prompt_file) for arg in self.prompt.args]

    def environment(self, gateway_url: str, job_token: str) -> dict[str, str]:
        return {
            key: value.replace("{gateway_url}", gateway_url).replace("{job_token}", job_token)
            for key, value in self.env.items()
        }

    @field_validator("args")
    @classmethod
    def _fixed_args(cls, value: list[str]) -> list[str]:
        return _check_placeholders(value, ("{gateway_url}",))

    @field_validator("version_args")
    @classmethod
    def _literal_args(cls, value: list[str]) -> list[str]:
        return _check_placeholders(value, ())

    @field_validator("flags")
    @classmethod
    def _known_flags(cls, value: dict[str, Flag]) -> dict[str, Flag]:
        unknown = sorted(set(value) - set(FLAG_OPTIONS))
        if unknown:
            raise ValueError(f"unknown flag option(s) {unknown}; known: {list(FLAG_OPTIONS)}")
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        for key, template in value.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                raise ValueError(f"env name {key!r} is not a valid variable name")
            _check_placeholders([template], ENV_PLACEHOLDERS)
        return value


# --- templates -----------------------------------------------------------------------


class Template(ConfigModel):
    name: str = Field(pattern=NAME_PATTERN)
    source: str


Config = Profile | Engine | Template
