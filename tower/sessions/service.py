"""Continue a finished job: a new job in its session, same engine and profile, started
from the workspace and engine state its turn left (docs/sessions.md)."""

from __future__ import annotations

from typing import Any

from tower.access import Caller
from tower.configs.store import ConfigStore
from tower.db.pool import Pool
from tower.errors import Conflict, NotFound
from tower.jobs import service as jobs
from tower.jobs.queries import LIST_TEXT_LIMIT
from tower.jobs.schemas import JOB_ID, ContinueRequest, JobRequest, Submitted
from tower.observability.metrics import TowerMetrics
from tower.sessions import queries
from tower.sessions.schemas import Session, Turn
from tower.settings import Settings
from tower.tenants.admission import Quotas

# The parent's request fields a turn does not carry over: its workspace comes from the
# parent's captured state, not from uploads or a fresh clone.
NOT_CARRIED = ("inputs", "repo", "output", "max_attempts", "session")


async def continue_job(
    pool: Pool,
    configs: ConfigStore,
    settings: Settings,
    metrics: TowerMetrics,
    parent_id: str,
    body: ContinueRequest,
    caller: Caller,
    quotas: Quotas,
) -> Submitted:
    """The next turn is the parent's tenant's (the same as the caller's, unless an admin
    continues another tenant's job), recorded as submitted by the caller's key."""
    parent = await _parent(pool, parent_id, caller.sees)
    _check_finished(parent)
    _check_resumable(configs, parent["engine"])
    _check_state(parent, settings)
    request = _turn_request(parent["request"], body)
    session_id = parent["session_id"] or parent["job_id"]
    link = jobs.SessionLink(session_id, parent["job_id"], (parent["turn"] or 1) + 1)
    owner = jobs.Owner(parent["tenant"], caller.key_name)
    with jobs.counted_refusal(metrics, owner.tenant):
        job_id = await jobs.insert_continued(pool, configs, settings, request, link, owner, quotas)
    metrics.job_submitted()
    metrics.tenants.submitted(owner.tenant)
    return Submitted(job_id=job_id)


async def _parent(pool: Pool, job_id: str, sees: str | None) -> Any:
    row = None
    if JOB_ID.match(job_id):
        row = await pool.fetchrow(queries.SELECT_PARENT, job_id, sees)
    if row is None:
        raise NotFound(f"Job {job_id} not found")
    return row


def _check_finished(parent: Any) -> None:
    status = parent["status"]
    if status in ("pending", "running"):
        raise Conflict(f"Job {parent['job_id']} is {status}: continue it once it has finished")
    if parent["started_at"] is None:
        job = parent["job_id"]
        raise Conflict(f"Job {job} was {status} before it started: nothing to continue")


def _check_resumable(configs: ConfigStore, engine_name: str) -> None:
    engine = configs.engine(engine_name)
    if engine is None or engine.resume is None:
        raise Conflict(
            f"engine {engine_name!r} cannot resume a conversation (its engine file has no"
            " [resume] table): start a new job instead"
        )


def _check_state(parent: Any, settings: Settings) -> None:
    if parent["state_size"] is None:
        raise NotFound(
            f"Job {parent['job_id']} has no session state to continue from: it expired"
            f" (SESSION_TTL_HOURS={settings.session_ttl_hours} after the session's last turn)"
            " or the turn kept none (MAX_ARTIFACT_BYTES)"
        )


def _turn_request(stored: dict[str, Any], body: ContinueRequest) -> JobRequest:
    carried = {key: value for key, value in stored.items() if key not in NOT_CARRIED}
    changes = body.model_dump(exclude_none=True)
    return JobRequest.model_validate(carried | changes)


async def get_session(pool: Pool, session_id: str, sees: str | None) -> Session:
    rows = []
    if JOB_ID.match(session_id):
        rows = await pool.fetch(queries.SELECT_TURNS, session_id, sees)
    if not rows:
        raise NotFound(f"Session {session_id} not found")
    turns = [Turn.model_validate(_preview(dict(row))) for row in rows]
    return Session(session_id=session_id, turns=turns)


def _preview(row: dict[str, Any]) -> dict[str, Any]:
    for name in ("result", "error"):
        if isinstance(row[name], str):
            row[name] = row[name][:LIST_TEXT_LIMIT]
    return row


async def delete_expired_state(connection: Any, ttl_hours: int) -> int:
    """Retention's share: captured state past SESSION_TTL_HOURS after its session's last
    turn finished, with its chunks."""
    status = await connection.execute(queries.DELETE_EXPIRED_STATE, ttl_hours)
    return int(status.split()[-1])
