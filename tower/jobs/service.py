"""Submit, read, list, cancel and wait for jobs. One transaction per call."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import secrets
from asyncio import FIRST_COMPLETED
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tower.access import Caller
from tower.configs.store import ConfigStore
from tower.credentials import service as credentials
from tower.db.group_commit import GroupCommit
from tower.db.notify import NotifyHub
from tower.db.pool import Pool, transaction
from tower.db.statuses import TERMINAL_STATUSES
from tower.egress import service as egress
from tower.errors import Conflict, Invalid, NotFound, Timeout, Unavailable
from tower.gateway.providers import require_credential
from tower.jobs import queries, records
from tower.jobs.schemas import (
    JOB_ID,
    Cancelled,
    JobEgress,
    JobPage,
    JobRecord,
    JobRequest,
    JobStatus,
)
from tower.observability.metrics import TowerMetrics
from tower.settings import Settings, egress_enabled, memory_bytes
from tower.tenants import admission
from tower.tenants.admission import Quotas
from tower.tenants.quotas import Limits
from tower.uploads import service as uploads
from tower.webhooks.url import check_webhook_url

IDEMPOTENCY_HEADER = "Idempotency-Key"
# JobRequest fields added after idempotency keys were first stored.
ADDED_FIELDS = ("inputs", "repo", "output", "egress")


class InvalidHeader(Invalid):
    """A 422 whose loc points at a request header rather than the body."""

    def body(self) -> dict[str, Any]:
        return {"detail": [{"loc": ["header", self.field], "msg": self.message}]}


@dataclass(frozen=True)
class SubmitOutcome:
    job_id: str
    replayed: bool


# Plain submissions (no idempotency key) share commits with their concurrent neighbours.
JobInserts = GroupCommit[queries.JobRow, None]


def job_inserts(pool: Pool) -> JobInserts:
    return GroupCommit(pool, queries.insert_jobs, "job-inserts")


class _KeyTaken(Exception):
    """Another request committed the same idempotency key first; roll back and replay."""


def new_job_id(agent_id: str) -> str:
    return f"{agent_id}-{secrets.token_hex(6)}"


def request_hash(request: JobRequest) -> str:
    """Fingerprint of the validated request: equal for bodies that mean the same job."""
    # Fields a request leaves empty are left out, so its fingerprint is the one keys
    # stored before those fields existed have.
    exclude = {name for name in ADDED_FIELDS if not getattr(request, name)} or None
    canonical = json.dumps(
        request.model_dump(mode="json", exclude=exclude),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


# --- submit ---------------------------------------------------------------------------


async def submit_job(
    pool: Pool,
    inserts: JobInserts,
    configs: ConfigStore,
    settings: Settings,
    metrics: TowerMetrics,
    request: JobRequest,
    idempotency_key: str | None,
    caller: Caller,
    quotas: Quotas,
) -> SubmitOutcome:
    """A new job of the caller's tenant, recorded as submitted by its key, within the
    tenant's quotas (tower/tenants/admission.py)."""
    _check_webhook_target(request, settings)
    owner = Owner(caller.tenant, caller.key_name)
    limits = await quotas.limits(owner.tenant)
    gate = Gate(quotas, limits) if admission.gated(limits) else None
    with counted_refusal(metrics, owner.tenant):
        outcome = await _submit(
            pool, inserts, configs, settings, request, idempotency_key, owner, gate
        )
    if not outcome.replayed:
        metrics.job_submitted()
        metrics.tenants.submitted(owner.tenant)
    return outcome


@contextlib.contextmanager
def counted_refusal(metrics: TowerMetrics, tenant: str) -> Iterator[None]:
    """A submit refused for a quota is counted by tenant and quota, then answered."""
    try:
        yield
    except admission.OverQuota as refusal:
        metrics.tenants.refused(tenant, refusal.quota)
        raise


def _check_webhook_target(request: JobRequest, settings: Settings) -> None:
    """Refuse private webhook hosts by the URL's text, unless the operator allows them."""
    if request.webhook_url is None or settings.webhook_allow_private:
        return
    try:
        check_webhook_url(request.webhook_url)
    except ValueError as error:
        raise Invalid(f"webhook_url {error}", field="webhook_url") from None


class InvalidInput(Invalid):
    """A 422 whose loc is the input's field, as pydantic would spell it."""

    def __init__(self, message: str, index: int) -> None:
        super().__init__(message, field="inputs")
        self.index = index

    def body(self) -> dict[str, Any]:
        loc = ["body", "inputs", self.index, "upload"]
        return {"detail": [{"loc": loc, "msg": self.message}]}


async def _check_inputs(pool: Pool, settings: Settings, request: JobRequest, tenant: str) -> None:
    """Every input's upload is the tenant's, exists and has not expired, and together
    they fit the bundle volume they travel through (their unpacked size was bounded at
    upload). Another tenant's upload is as unknown as one that never was."""
    if not request.inputs:
        return
    sizes = await uploads.live_sizes(pool, [item.upload for item in request.inputs], tenant)
    for index, item in enumerate(request.inputs):
        if item.upload not in sizes:
            raise InvalidInput("unknown or expired upload", index)
    total = sum(sizes[item.upload] for item in request.inputs)
    volume = memory_bytes(settings.bundle_volume_size) or 0
    if total > volume:
        raise Invalid(
            f"the inputs' uploads total {total} bytes, more than BUNDLE_VOLUME_SIZE"
            f" ({settings.bundle_volume_size}, {volume} bytes) through which they reach the job",
            field="inputs",
        )


async def _check_repo(pool: Pool, settings: Settings, request: JobRequest, tenant: str) -> None:
    """The repository's host by the URL's text (as a webhook's; its addresses are checked
    again at clone time) and its credential: it exists, and can open a pull request."""
    repo = request.repo
    if repo is None:
        return
    if not settings.repo_allow_private:
        try:
            check_webhook_url(repo.url)
        except ValueError as error:
            message = f"repo.url {error} (set REPO_ALLOW_PRIVATE=true to allow)"
            raise InvalidAt(message, ["repo", "url"]) from None
    if repo.credential is None:
        return
    try:
        credential = await credentials.get(pool, repo.credential, tenant)
    except NotFound:
        raise InvalidAt("unknown credential", ["repo", "credential"]) from None
    wants_pull = request.output is not None and request.output.pull_request is not None
    if wants_pull and credential.kind == "git":
        message = (
            f"credential {repo.credential!r} is a git one: a pull request needs github or gitlab"
        )
        raise InvalidAt(message, ["repo", "credential"])


class InvalidAt(Invalid):
    """A 422 whose loc is a nested body field."""

    def __init__(self, message: str, loc: list[str | int]) -> None:
        super().__init__(message, field=".".join(str(part) for part in loc))
        self.loc = loc

    def body(self) -> dict[str, Any]:
        return {"detail": [{"loc": ["body", *self.loc], "msg": self.message}]}


async def _check_workspace(
    pool: Pool, settings: Settings, request: JobRequest, tenant: str
) -> None:
    await _check_repo(pool, settings, request, tenant)
    await _check_inputs(pool, settings, request, tenant)


@dataclass(frozen=True)
class Gate:
    """A submit's tenant quotas, when it has some a submit must pass (admission.gated)."""

    quotas: Quotas
    limits: Limits


async def _budgeted(
    configs: ConfigStore, request: JobRequest, tenant: str, gate: Gate | None
) -> JobRequest:
    """The request with its max_budget_usd within what remains of the tenant's spend
    caps (by default all of it); 429 when nothing remains."""
    if gate is None or not (gate.limits.spend_per_day_usd or gate.limits.spend_per_month_usd):
        return request
    spent = await gate.quotas.spend(tenant)
    profile = configs.profile(request.profile)
    asked = request.max_budget_usd or (profile.max_budget_usd if profile else None)
    allowed = admission.budget(tenant, gate.limits, spent, asked)
    return request.model_copy(update={"max_budget_usd": allowed})


@dataclass(frozen=True)
class Owner:
    """Whose a new job is: its tenant, and the name of the key that submitted it."""

    tenant: str
    submitted_by: str


async def _submit(
    pool: Pool,
    inserts: JobInserts,
    configs: ConfigStore,
    settings: Settings,
    request: JobRequest,
    idempotency_key: str | None,
    owner: Owner,
    gate: Gate | None,
) -> SubmitOutcome:
    if idempotency_key is None:
        request = _checked(configs, settings, request)
        request = await _budgeted(configs, request, owner.tenant, gate)
        await _check_workspace(pool, settings, request, owner.tenant)
        if gate is None:
            job_id = await _insert_job(inserts, settings, request, owner)
        else:
            job_id = await _insert_admitted(pool, settings, request, owner, gate)
        return SubmitOutcome(job_id, replayed=False)
    fingerprint = request_hash(request)
    key = (idempotency_key, fingerprint, owner.tenant)
    # A replay returns the original job even if the configs changed since (Stripe semantics).
    replay = await _replay(pool, settings, *key)
    if replay is not None:
        return replay
    request = _checked(configs, settings, request)
    request = await _budgeted(configs, request, owner.tenant, gate)
    # After the replay: a replay returns its job even once the uploads are gone.
    await _check_workspace(pool, settings, request, owner.tenant)
    try:
        job_id = await _insert_keyed_job(pool, settings, request, key, owner, gate)
    except _KeyTaken:
        replay = await _replay(pool, settings, *key)
        if replay is None:
            raise Conflict(
                f"{IDEMPOTENCY_HEADER} is in use by a concurrent request; retry"
            ) from None
        return replay
    return SubmitOutcome(job_id, replayed=False)


def _checked(configs: ConfigStore, settings: Settings, request: JobRequest) -> JobRequest:
    """The request with its engine named (the profile's when it names none), checked
    against the configs and, unless it is a dry run, against the provider credentials."""
    engine = request.engine or _profile_engine(configs, request.profile)
    configs.validate_job(request.profile, engine, request.prompt_vars)
    found = configs.engine(engine)
    if found is not None and not request.dry_run:
        require_credential(settings, engine, found)
    allow = _egress(configs, settings, request)
    return request.model_copy(update={"engine": engine, "egress": allow})


def _egress(configs: ConfigStore, settings: Settings, request: JobRequest) -> JobEgress | None:
    """The allow-list the job runs with, stored in its request (docs/egress.md): its own
    within its profile's and EGRESS_ALLOW, else its profile's; None for none."""
    profile = configs.profile(request.profile)
    requested = request.egress.allow if request.egress is not None else None
    allow = egress.job_allow_list(settings, profile.egress.allow if profile else [], requested)
    if not allow:
        return None
    if not egress_enabled(settings):
        raise Conflict(
            "this job's egress allow-list needs the egress proxy, which this deployment"
            " does not run (EGRESS_MANAGED=false, no EGRESS_LISTEN)"
        )
    return JobEgress(allow=allow)


def _profile_engine(configs: ConfigStore, name: str) -> str:
    profile = configs.profile(name)
    if profile is None:
        return ""  # validate_job names the unknown profile
    if profile.engine is None:
        message = f"profile {name!r} names no engine: give one (known: {_engines(configs)})"
        raise Invalid(message, field="engine")
    return profile.engine


def _engines(configs: ConfigStore) -> str:
    return ", ".join(configs.engine_names())


async def _replay(
    pool: Pool, settings: Settings, key: str, fingerprint: str, tenant: str
) -> SubmitOutcome | None:
    row = await pool.fetchrow(
        queries.FIND_IDEMPOTENCY_KEY, key, settings.idempotency_ttl_hours, tenant
    )
    if row is None:
        return None
    if row["request_hash"] != fingerprint:
        raise InvalidHeader(
            f"{IDEMPOTENCY_HEADER} was already used with a different request body",
            field=IDEMPOTENCY_HEADER,
        )
    return SubmitOutcome(row["job_id"], replayed=True)


def _insert_values(
    job_id: str, settings: Settings, request: JobRequest, owner: Owner
) -> queries.JobRow:
    """lifecycle.INSERT_JOB's parameters, and the job's inputs."""
    max_attempts = request.max_attempts or settings.max_attempts
    stored = request.model_dump(mode="json") | {"max_attempts": max_attempts}
    return queries.JobRow(
        job_id,
        request.agent_id,
        request.engine or "",  # named by _checked
        request.profile,
        stored,
        request.priority,
        max_attempts,
        owner.tenant,
        owner.submitted_by,
        tuple((item.upload, item.path) for item in request.inputs),
    )


async def _insert_job(
    inserts: JobInserts, settings: Settings, request: JobRequest, owner: Owner
) -> str:
    job_id = new_job_id(request.agent_id)
    await inserts.write(_insert_values(job_id, settings, request, owner))
    return job_id


async def _insert_admitted(
    pool: Pool, settings: Settings, request: JobRequest, owner: Owner, gate: Gate
) -> str:
    """One job of a tenant with quotas: admitted and inserted in one transaction."""
    job_id = new_job_id(request.agent_id)
    async with transaction(pool) as connection:
        await admission.admit(connection, owner.tenant, gate.limits)
        await queries.insert_job(connection, _insert_values(job_id, settings, request, owner))
    return job_id


async def _insert_keyed_job(
    pool: Pool,
    settings: Settings,
    request: JobRequest,
    key: tuple[str, str, str],
    owner: Owner,
    gate: Gate | None,
) -> str:
    job_id = new_job_id(request.agent_id)
    idempotency_key, fingerprint, tenant = key
    async with transaction(pool) as connection:
        if gate is not None:
            await admission.admit(connection, owner.tenant, gate.limits)
        await queries.insert_job(connection, _insert_values(job_id, settings, request, owner))
        claimed = await connection.fetchrow(
            queries.CLAIM_IDEMPOTENCY_KEY,
            *(idempotency_key, fingerprint, job_id, settings.idempotency_ttl_hours, tenant),
        )
        if claimed is None:
            raise _KeyTaken
    return job_id


@dataclass(frozen=True)
class SessionLink:
    """Where a continued job stands: its session, the job it continues, its turn."""

    session_id: str
    parent_job_id: str
    turn: int


async def insert_continued(
    pool: Pool,
    configs: ConfigStore,
    settings: Settings,
    request: JobRequest,
    link: SessionLink,
    owner: Owner,
    quotas: Quotas,
) -> str:
    """A continued job (tower/sessions): checked like a submit, within its tenant's
    quotas, inserted with its place in the session, in one transaction that also makes
    its parent turn 1 if it was not in a session yet. The stored request carries the
    link, for staging and the spec."""
    _check_webhook_target(request, settings)
    limits = await quotas.limits(owner.tenant)
    gate = Gate(quotas, limits) if admission.gated(limits) else None
    request = _checked(configs, settings, request)
    request = await _budgeted(configs, request, owner.tenant, gate)
    job_id = new_job_id(request.agent_id)
    values = _insert_values(job_id, settings, request, owner)
    stored = values.request | {"session": vars(link).copy()}
    async with transaction(pool) as connection:
        if gate is not None:
            await admission.admit(connection, owner.tenant, gate.limits)
        await queries.insert_job(connection, values._replace(request=stored))
        await connection.execute(queries.START_SESSION, link.parent_job_id)
        await connection.execute(
            queries.SET_SESSION, job_id, link.session_id, link.parent_job_id, link.turn
        )
    return job_id


# --- read -----------------------------------------------------------------------------


async def get_job(pool: Pool, job_id: str, sees: str | None) -> JobRecord:
    """The job, if it is the tenant `sees`'s (None: any tenant's); else 404."""
    # An id that cannot exist is simply not found; it never reaches SQL.
    row = None
    if JOB_ID.match(job_id):
        row = await pool.fetchrow(queries.SELECT_JOB, job_id, sees)
    if row is None:
        raise NotFound(f"Job {job_id} not found")
    return records.record(row)


async def list_jobs(
    pool: Pool,
    status: JobStatus | None,
    agent_id: str | None,
    limit: int,
    offset: int,
    session_id: str | None,
    tenants: tuple[str | None, str | None],
) -> JobPage:
    """A page of the jobs the caller sees; `tenants` is (the tenant the caller sees,
    None for every tenant; the tenant asked for, if any): both must agree."""
    sees, asked = tenants
    if sees is not None and asked not in (None, sees):
        return JobPage(jobs=[], total=0, limit=limit, offset=offset)
    tenant = sees or asked
    filters = [value for value in (tenant, status, agent_id, session_id) if value is not None]
    shape = {
        "tenant": tenant is not None,
        "status": status is not None,
        "agent_id": agent_id is not None,
        "session_id": session_id is not None,
    }
    # One snapshot, so the total agrees with the page.
    async with (
        pool.acquire() as connection,
        connection.transaction(isolation="repeatable_read", readonly=True),
    ):
        total = await connection.fetchval(queries.count_jobs(**shape), *filters)
        rows = await connection.fetch(queries.list_jobs(**shape), *filters, limit, offset)
    jobs = [records.summary(row) for row in rows]
    return JobPage(jobs=jobs, total=total, limit=limit, offset=offset)


# --- cancel ---------------------------------------------------------------------------


async def cancel_job(pool: Pool, metrics: TowerMetrics, job_id: str, sees: str | None) -> Cancelled:
    if not JOB_ID.match(job_id):
        raise NotFound(f"Job {job_id} not found")
    async with transaction(pool) as connection:
        if await queries.cancel_job(connection, job_id, sees):
            metrics.job_finished("cancelled")
            return Cancelled(job_id=job_id)
        # Not live: either unknown (or another tenant's), or terminal (and terminal
        # states never change).
        status = await connection.fetchval(queries.SELECT_STATUS, job_id, sees)
    if status is None:
        raise NotFound(f"Job {job_id} not found")
    raise Conflict(f"Job already {status}")


# --- wait -----------------------------------------------------------------------------


SHUTTING_DOWN = "This tower is shutting down; ask again (any replica answers)"


async def wait_for_job(
    pool: Pool,
    hub: NotifyHub,
    job_id: str,
    seconds: float,
    stopping: asyncio.Event | None,
    sees: str | None,
) -> JobRecord:
    """Return the job once terminal. Subscribes before reading, so no notice is missed.
    A replica that begins to shut down answers 503 instead of holding the wait.
    Another tenant's job is not found."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    stopping = stopping or asyncio.Event()
    with hub.finished_event(job_id) as finished:
        while True:
            job = await get_job(pool, job_id, sees)
            if job.status in TERMINAL_STATUSES:
                return job
            if stopping.is_set():
                raise Unavailable(SHUTTING_DOWN)
            if not await _until_either(finished, stopping, deadline - loop.time()):
                raise Timeout(f"Job {job_id} did not finish within {seconds:g} seconds")
            finished.clear()


async def _until_either(first: asyncio.Event, second: asyncio.Event, seconds: float) -> bool:
    """Whether either event was set within `seconds`."""
    if seconds <= 0:
        return False
    waits = {asyncio.ensure_future(first.wait()), asyncio.ensure_future(second.wait())}
    done, pending = await asyncio.wait(waits, timeout=seconds, return_when=FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    return bool(done)
