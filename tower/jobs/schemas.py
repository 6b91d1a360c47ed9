"""What the jobs API accepts and returns.

Every rule lives on the request model, so a rejection is a 422 whose `loc` names the
field. Strings that PostgreSQL cannot store (NUL, lone surrogates) and numbers JSON
cannot carry (NaN, infinity) are refused here rather than failing at the INSERT.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    WithJsonSchema,
    model_validator,
)

from tower.artifacts.schemas import ArtifactsSummary, Changes
from tower.configs.egress import MAX_ENTRIES as EGRESS_ENTRIES_MAX
from tower.configs.egress import MAX_ENTRY_CHARS as EGRESS_ENTRY_MAX
from tower.configs.egress import check_entries
from tower.db.ids import JOB_ID as JOB_ID
from tower.db.ids import SAFE_ID as SAFE_ID
from tower.db.statuses import JobStatus as JobStatus
from tower.errors import Invalid, TowerError
from tower.uploads.archive import inside
from tower.webhooks.schemas import WebhookDelivery
from tower.webhooks.url import check_url_shape
from tower.workspaces.publish import check_branch
from tower.workspaces.repo import check_ref

MODEL_NAME = r"^[A-Za-z0-9._:/@+-]{1,200}$"
# Printable ASCII, so the key survives every proxy and log unchanged.
IDEMPOTENCY_KEY = r"^[\x20-\x7e]{1,255}$"

# Text limits count UTF-8 bytes (what is sent, stored and handed to the worker), not
# characters: a character may be four bytes.
PROMPT_MAX = 100_000_000
SYSTEM_PROMPT_MAX = 500_000
VAR_VALUE_MAX = 10_000_000
VARS_MAX = 200
VAR_NAME_MAX = 128
TOOLS_MAX = 100
TOOL_MAX = 200
MCP_CONFIG_MAX = 1_000_000
INPUTS_MAX = 100
INPUT_PATH_MAX = 1024
UPLOAD_ID = r"^up-[0-9a-f]{24}$"

OutputFormat = Literal["json", "text", "stream-json"]

_COUNT_SLICE = 1 << 20
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _storable(text: str) -> str:
    if _UNSTORABLE.search(text):
        raise ValueError("must not contain NUL characters or unpaired surrogates")
    return text


def utf8_length(text: str, limit: int) -> int:
    """`text`'s length in UTF-8 bytes, counted up to just past `limit`: a slice at a time,
    so a 100 MB prompt is never encoded whole for the count."""
    if text.isascii():
        return len(text)
    total = 0
    for start in range(0, len(text), _COUNT_SLICE):
        total += len(text[start : start + _COUNT_SLICE].encode("utf-8", "surrogatepass"))
        if total > limit:
            break
    return total


def _at_most_bytes(limit: int) -> AfterValidator:
    def check(text: str) -> str:
        if len(text) > limit or utf8_length(text, limit) > limit:
            raise ValueError(f"must be at most {limit} bytes as UTF-8")
        return text

    return AfterValidator(check)


def _json_document(value: dict[str, Any]) -> dict[str, Any]:
    _check_strings(value)
    try:
        encoded = json.dumps(value, allow_nan=False)
    except ValueError:
        raise ValueError("must not contain NaN or infinite numbers") from None
    if len(encoded) > MCP_CONFIG_MAX:
        raise ValueError(f"must be at most {MCP_CONFIG_MAX} characters as JSON")
    return value


def _check_strings(value: Any) -> None:
    if isinstance(value, str):
        _storable(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _storable(key)
            _check_strings(item)
    elif isinstance(value, list):
        for item in value:
            _check_strings(item)


def _var_value(value: Any) -> str | bool | int | float:
    if isinstance(value, str):
        if len(value) > VAR_VALUE_MAX or utf8_length(value, VAR_VALUE_MAX) > VAR_VALUE_MAX:
            raise ValueError(f"must be at most {VAR_VALUE_MAX} bytes as UTF-8")
        return _storable(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be a finite number")
    if isinstance(value, bool | int | float):
        return value
    raise ValueError("must be a string, a number or a boolean")


def _workspace_path(path: str) -> str:
    """A directory inside /workspace, normalised ("" is /workspace itself)."""
    if path in ("", "."):
        return ""
    try:
        normal = inside(path)
    except Invalid:
        raise ValueError("must be a relative path inside the workspace, without '..'") from None
    return "" if normal == "." else normal


StorableText = Annotated[str, AfterValidator(_storable)]
SafeId = Annotated[str, Field(pattern=SAFE_ID)]
VarName = Annotated[StorableText, Field(min_length=1, max_length=VAR_NAME_MAX)]
# One validator instead of a Union, so an error's loc is the variable, not a union branch.
VarValue = Annotated[
    str | bool | int | float,
    PlainValidator(_var_value),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "maxLength": VAR_VALUE_MAX},
                {"type": "boolean"},
                {"type": "integer"},
                {"type": "number"},
            ]
        }
    ),
]
Vars = Annotated[dict[VarName, VarValue], Field(max_length=VARS_MAX)]
Tool = Annotated[StorableText, Field(min_length=1, max_length=TOOL_MAX)]
# The shape is checked here; whether the host may be private depends on the operator's
# WEBHOOK_ALLOW_PRIVATE, so the service checks that (still a 422 naming the field).
WebhookUrl = Annotated[str, AfterValidator(check_url_shape)]


# Omitted: the profile's, filled in at submit before the job is stored. A string in the
# schema (where /openapi.json lists the engines), not a nullable one.
OptionalEngine = Annotated[
    SafeId | None,
    WithJsonSchema(
        {
            "type": "string",
            "pattern": SAFE_ID,
            "description": "the engine to run; omitted: the profile's",
        }
    ),
]


class JobInput(BaseModel):
    """An upload unpacked into the job's workspace before the agent starts: a file lands
    as /workspace/<path>/<its filename>, an archive's entries under /workspace/<path>."""

    model_config = ConfigDict(extra="forbid")

    upload: Annotated[str, Field(pattern=UPLOAD_ID)]
    path: Annotated[
        StorableText, Field(max_length=INPUT_PATH_MAX), AfterValidator(_workspace_path)
    ] = ""


REPO_URL_MAX = 2048
PR_TITLE_MAX = 256
PR_BODY_MAX = 65_536


def _checked_by(check: Callable[[str], None]) -> AfterValidator:
    """A workspace rule (it raises a TowerError) as a field validator (a 422 on the field)."""

    def run(value: str) -> str:
        try:
            check(value)
        except TowerError as error:
            raise ValueError(error.message) from None
        return value

    return AfterValidator(run)


class JobRepo(BaseModel):
    """The repository tower clones as the workspace's root (with .git), before the agent
    starts; `credential` names a stored one (POST /credentials)."""

    model_config = ConfigDict(extra="forbid")

    url: Annotated[str, Field(max_length=REPO_URL_MAX), AfterValidator(check_url_shape)]
    ref: Annotated[str, Field(max_length=200), _checked_by(check_ref)] | None = None
    credential: SafeId | None = None


class PullRequestSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: Annotated[StorableText, Field(min_length=1, max_length=PR_TITLE_MAX)]
    body: Annotated[StorableText, _at_most_bytes(PR_BODY_MAX)] = ""


class JobOutput(BaseModel):
    """What tower does with a repository job's changes: commit them on a new `branch`,
    push it with the repository's credential, and open a pull request if asked."""

    model_config = ConfigDict(extra="forbid")

    branch: Annotated[str, Field(max_length=200), _checked_by(check_branch)]
    pull_request: PullRequestSpec | None = None


class JobEgress(BaseModel):
    """What the job's processes may reach through the egress proxy (docs/egress.md):
    host, host:port and *.suffix entries, each within its profile's list, or beyond it
    within the operator's EGRESS_ALLOW. Without it, the profile's list; [] for none."""

    model_config = ConfigDict(extra="forbid")

    allow: Annotated[
        list[Annotated[str, Field(max_length=EGRESS_ENTRY_MAX)]],
        Field(max_length=EGRESS_ENTRIES_MAX),
        AfterValidator(check_entries),
    ]


class EgressRefusal(BaseModel):
    host: str
    port: int
    reason: str


class EgressRecord(BaseModel):
    """What a job's requests through the egress proxy came to."""

    allow: list[str]
    allowed: int = Field(default=0, description="requests the proxy let through")
    refused: list[EgressRefusal] = Field(
        default_factory=list, description="hosts refused, and why (at most 50 listed)"
    )
    refused_count: int = 0
    bytes: int = Field(default=0, description="what the allowed requests moved, in total")
    limited: str | None = Field(
        default=None, description="the bound that refused it: 'bytes' or 'connections'"
    )


class JobRequest(BaseModel):
    """POST /jobs body. Unknown fields are refused, so a typo is an error, not a no-op."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    agent_id: SafeId
    engine: OptionalEngine = None
    prompt: Annotated[StorableText, _at_most_bytes(PROMPT_MAX)] = ""
    profile: SafeId = "default"
    prompt_vars: Vars = Field(default_factory=dict)
    claude_md_vars: Vars = Field(default_factory=dict)
    plugins: Annotated[list[SafeId], Field(max_length=TOOLS_MAX)] = Field(default_factory=list)
    allowed_tools: Annotated[list[Tool], Field(max_length=TOOLS_MAX)] = Field(default_factory=list)
    max_turns: Annotated[int, Field(ge=1, le=100)] | None = None
    max_budget_usd: Annotated[float, Field(gt=0, le=50)] | None = None
    mcp_config: Annotated[dict[str, Any], AfterValidator(_json_document)] | None = None
    model: Annotated[str, Field(pattern=MODEL_NAME)] | None = None
    system_prompt: Annotated[StorableText, _at_most_bytes(SYSTEM_PROMPT_MAX)] | None = None
    output_format: OutputFormat = "json"
    dry_run: bool = False
    webhook_url: WebhookUrl | None = None
    priority: Annotated[int, Field(ge=-1000, le=1000)] = 0
    max_attempts: Annotated[int, Field(ge=1, le=20)] | None = None
    inputs: Annotated[list[JobInput], Field(max_length=INPUTS_MAX)] = Field(default_factory=list)
    repo: JobRepo | None = None
    output: JobOutput | None = None
    egress: JobEgress | None = None

    @model_validator(mode="after")
    def _output_needs_a_repo(self) -> JobRequest:
        if self.output is not None and self.repo is None:
            raise ValueError("output needs repo: the branch is pushed to the job's repository")
        if self.output and self.output.pull_request and not (self.repo and self.repo.credential):
            raise ValueError("output.pull_request needs repo.credential (a github or gitlab one)")
        return self


class ContinueRequest(BaseModel):
    """POST /jobs/{id}/continue body: the options a follow-up may change. The engine,
    profile and everything else are the parent's (docs/sessions.md)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    prompt: Annotated[StorableText, _at_most_bytes(PROMPT_MAX)]
    prompt_vars: Vars | None = None
    max_turns: Annotated[int, Field(ge=1, le=100)] | None = None
    max_budget_usd: Annotated[float, Field(gt=0, le=50)] | None = None
    webhook_url: WebhookUrl | None = None
    model: Annotated[str, Field(pattern=MODEL_NAME)] | None = None


class Submitted(BaseModel):
    job_id: str
    status: JobStatus = "pending"


class Cancelled(BaseModel):
    job_id: str
    status: JobStatus = "cancelled"


class JobSummary(BaseModel):
    """A job as listed: columns only, `result` and `error` cut to a preview.

    List rows stay light whatever the jobs hold: no prompt, and result/error at most
    LIST_TEXT_LIMIT characters each (`truncated` says when either was cut). The whole
    record is at GET /jobs/{job_id}.
    """

    job_id: str
    status: JobStatus
    agent_id: str
    engine: str
    profile: str
    priority: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    exit_code: int | None
    result: str | None
    error: str | None
    attempt: int
    max_attempts: int
    failure_reason: str | None
    usage: dict[str, Any] | None
    duration_ms: int | None
    ran_by: str | None = Field(
        default=None, description="the tower replica that claimed the latest attempt"
    )
    session_id: str | None = Field(
        default=None, description="its session (the first turn's job id), once continued"
    )
    parent_job_id: str | None = Field(default=None, description="the job this turn continues")
    turn: int | None = Field(default=None, description="its turn in the session, from 1")
    tenant: str = Field(default="default", description="whose job it is")
    submitted_by: str | None = Field(
        default=None, description="the name of the key that submitted it (never the key)"
    )
    truncated: bool = False


class JobRecord(JobSummary):
    """One job in full: whole result and error, and the request fields worth echoing.

    The prompt itself is never echoed (it may be 100 MB and the client has it);
    `prompt_chars` is its stored length, so a client can check it arrived whole.
    """

    dry_run: bool
    webhook_url: str | None
    model: str | None
    output_format: str
    max_turns: int | None
    max_budget_usd: float | None
    prompt_chars: int
    inputs: list[JobInput] = Field(default_factory=list)
    repo: JobRepo | None = None
    output: JobOutput | None = None
    webhook_deliveries: list[WebhookDelivery] = Field(default_factory=list)
    # What the last attempt left in /workspace (GET /jobs/{id}/artifacts lists it); a
    # repository job's diff totals. None until an attempt stored some.
    artifacts: ArtifactsSummary | None = None
    changes: Changes | None = None
    # A repository job's output as tower did it: {branch, commit, pull_request_url,
    # pull_request_number}, or {branch: null, reason | error} when nothing was pushed.
    published: dict[str, Any] | None = None
    # Its egress allow-list and what its requests through the proxy came to; None for a
    # job without one.
    egress: EgressRecord | None = None


class JobPage(BaseModel):
    jobs: list[JobSummary]
    total: int
    limit: int
    offset: int
