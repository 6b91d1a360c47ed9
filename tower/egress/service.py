"""Tower's answers to the egress proxy (docs/egress.md), and a job's list at submit.

The proxy's helpers (egress/helper.py) ask, for each request:
1. authenticate: is the password the gateway token of the running attempt the user names
   (`<job id>.<attempt>`), and has that job an allow-list? (squid keeps a yes for
   EGRESS_AUTH_CACHE_SECONDS; a finished attempt's token also fails step 2 at once)
2. decide: may that attempt reach host:port, whose addresses the proxy resolved? A yes
   counts the request as open against EGRESS_MAX_CONNECTIONS (and closes the job's
   requests an earlier instance of the proxy let through: they ended with it); a no is a
   job event and a line of the job's record at once.
3. ended: an allowed request ended, having moved so many bytes (its event, and the bytes
   that EGRESS_MAX_BYTES bounds); or squid refused it after tower's yes, its own lookup
   of the name having given a non-public address (a refusal, as if tower had refused it).
   Squid's report of an end carries no token: it carries the tag tower's yes gave the
   request (tower/egress/tags.py). An end whose tag tower did not make is refused, and
   one whose request is not open (a replay) closes nothing.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tower.configs.egress import normal_host
from tower.db.ids import JOB_ID
from tower.db.pool import Connection, Pool, transaction
from tower.egress import policy, queries, tags
from tower.errors import Invalid
from tower.gateway import tokens
from tower.observability.metrics import TowerMetrics
from tower.settings import Settings

log = logging.getLogger(__name__)

MAX_HOST_CHARS = 255
# A request whose credentials are not those of a running attempt (it ended, or they are
# another's): nothing is written for it.
NOT_RUNNING = "job {} (attempt {}) is not running, or these are not its credentials"
# The tower_secrets row of the key that signs the ends' tags.
END_KEY_NAME = "egress_end_key"


@dataclass(frozen=True)
class Attempt:
    """Who a proxy user names: `<job id>.<attempt>`."""

    job_id: str
    number: int

    @property
    def user(self) -> str:
        return f"{self.job_id}.{self.number}"


def attempt_of(user: str) -> Attempt | None:
    job_id, dot, number = user.rpartition(".")
    if not dot or not JOB_ID.match(job_id) or not number.isdigit() or len(number) > 9:
        return None
    return Attempt(job_id, int(number))


def proxy_user(job_id: str, attempt: int) -> str:
    return Attempt(job_id, attempt).user


@dataclass(frozen=True)
class Question:
    """One request the proxy asks about, as its helper saw it (with the token of its
    credentials: squid checked it already, tower checks it again where it decides)."""

    user: str
    token: str
    host: str
    port: int
    method: str
    addresses: Sequence[str]
    resolve_error: str | None = None
    # Which instance of the proxy asks (its container's host name and start time).
    proxy: str = ""


@dataclass(frozen=True)
class Decision:
    """Tower's answer: why not (`reason`), or the tag of the request let go."""

    reason: str | None
    tag: str = ""


@dataclass(frozen=True)
class Ended:
    """One allowed request that ended, from the proxy's log line."""

    user: str
    host: str
    port: int
    method: str
    status: int
    moved: int
    # Squid refused it (its denied_destination ACL), not the remote end.
    refused: bool = False
    # The tag tower's yes gave it (tags.sign).
    tag: str = ""


@dataclass
class Ends:
    """What became of the ends of one report."""

    counted: int = 0
    # Their tag is not tower's for this request: forged (or garbled), nothing written.
    forged: int = 0
    # Their request was not open: ended already (a replay, a report sent twice).
    not_open: int = 0


# --- the proxy's questions --------------------------------------------------------------


async def authenticate(pool: Pool, user: str, token: str) -> bool:
    attempt = attempt_of(user)
    if attempt is None or not tokens.plausible(token):
        return False
    async with pool.acquire() as connection:
        return await queries.attempt_of_token(
            connection, tokens.digest(token), attempt.job_id, attempt.number
        )


async def end_key(pool: Pool) -> bytes:
    """The key of the ends' tags, the same on every replica (made by the first)."""
    async with pool.acquire() as connection:
        return bytes.fromhex(await queries.end_key(connection, END_KEY_NAME, secrets.token_hex(32)))


async def decide(
    pool: Pool, settings: Settings, metrics: TowerMetrics, key: bytes, question: Question
) -> Decision:
    """The tag of the request when it may go (it is counted open), else why not."""
    attempt = attempt_of(question.user)
    if attempt is None or len(question.host) > MAX_HOST_CHARS:
        return Decision("the request names no running job")
    if not tokens.plausible(question.token):
        return Decision(NOT_RUNNING.format(attempt.job_id, attempt.number))
    host = normal_host(question.host)
    async with transaction(pool) as connection:
        await queries.commit_without_waiting(connection)
        found = await queries.running_attempt(
            connection, attempt.job_id, attempt.number, tokens.digest(question.token)
        )
        if found is None:
            return Decision(NOT_RUNNING.format(attempt.job_id, attempt.number))
        profile, entries = found
        private = bool(settings.egress_allow_private)
        reason = policy.refusal(
            entries, host, question.port, question.addresses, question.resolve_error, private
        )
        limited, serial = None, 0
        if reason is None:
            reason, limited, serial = await _within_bounds(
                connection, settings, attempt.job_id, question.proxy
            )
        if reason is not None:
            await _refused(connection, attempt, question, host, reason, limited)
    metrics.egress_decided(profile, reason is None)
    if reason is not None:
        return Decision(reason)
    return Decision(None, tags.sign(key, attempt.user, host, question.port, serial))


async def _within_bounds(
    connection: Connection, settings: Settings, job_id: str, proxy: str
) -> tuple[str | None, str | None, int]:
    """(None, None, the request's serial) when it is counted open; else (why not, which
    bound, 0)."""
    max_open, max_bytes = int(settings.egress_max_connections), int(settings.egress_max_bytes)
    usage = await queries.open_request(connection, job_id, proxy, max_open, max_bytes)
    if isinstance(usage, int):
        return None, None, usage
    _open, moved = usage
    if moved >= max_bytes:
        why = f"the job moved {moved} bytes through the proxy: EGRESS_MAX_BYTES is {max_bytes}"
        return why, "bytes", 0
    why = f"the job has {max_open} requests open: EGRESS_MAX_CONNECTIONS is {max_open}"
    return why, "connections", 0


async def _refused(
    connection: Connection,
    attempt: Attempt,
    question: Question,
    host: str,
    reason: str,
    limited: str | None,
) -> None:
    listed, event = _refusal(host, question.port, question.method, reason)
    await queries.refuse(connection, attempt.job_id, attempt.number, listed, limited, event)


def _refusal(
    host: str, port: int, method: str, reason: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A refusal as the job's record lists it, and as its `egress` event."""
    listed = {"host": host, "port": port, "reason": reason}
    event = {**listed, "method": method[:16], "allowed": False, "bytes": 0}
    return listed, event


async def ended(pool: Pool, metrics: TowerMetrics, key: bytes, entries: Sequence[Ended]) -> Ends:
    """Count what allowed requests moved, and write their events (while the job runs):
    each request once, when its tag is the one tower gave it."""
    found = Ends()
    async with transaction(pool) as connection:
        await queries.commit_without_waiting(connection)
        for entry in entries:
            attempt = attempt_of(entry.user)
            host = normal_host(entry.host)[:MAX_HOST_CHARS]
            serial = None
            if attempt is not None:
                serial = tags.serial_of(key, attempt.user, host, entry.port, entry.tag)
            if attempt is None or serial is None:
                found.forged += 1
                continue
            if entry.refused:
                profile = await _refused_by_proxy(connection, attempt, serial, host, entry)
            else:
                profile = await _ended(connection, attempt, serial, host, entry)
            if profile is None:
                found.not_open += 1
                continue
            found.counted += 1
            if entry.refused:
                metrics.egress_decided(profile, False)
            else:
                metrics.egress_ended(profile, max(entry.moved, 0))
    metrics.egress_ends_refused("forged", found.forged)
    metrics.egress_ends_refused("not_open", found.not_open)
    return found


async def _ended(
    connection: Connection, attempt: Attempt, serial: int, host: str, entry: Ended
) -> str | None:
    """The job's profile when the request was open (now ended), else None."""
    event = {
        "host": host,
        "port": entry.port,
        "method": entry.method[:16],
        "allowed": True,
        "bytes": entry.moved,
        "status": entry.status,
    }
    moved = max(entry.moved, 0)
    return await queries.ended(connection, attempt.job_id, attempt.number, serial, moved, event)


def proxy_refusal(host: str) -> str:
    """Why squid refused a request tower had let go (its denied_destination ACL)."""
    return (
        f"{host} resolved to a non-public address when the proxy connected "
        "(private, loopback, link-local or metadata; refused by the proxy)"
    )


async def _refused_by_proxy(
    connection: Connection, attempt: Attempt, serial: int, host: str, entry: Ended
) -> str | None:
    """A request tower allowed and squid then refused: no longer open, moved nothing
    (squid's error page is not the job's traffic), listed and evented as a refusal; the
    job's profile when it was open, else None. The metrics count it refused too (it was
    counted allowed when tower said yes)."""
    listed, event = _refusal(host, entry.port, entry.method, proxy_refusal(host))
    return await queries.refused_by_proxy(
        connection, attempt.job_id, attempt.number, serial, listed, event
    )


# --- a job's list, at submit ------------------------------------------------------------


def check_settings(settings: Settings) -> None:
    """Stop the start on an EGRESS_ALLOW that does not parse, naming it."""
    try:
        policy.ceiling(settings.egress_allow)
    except ValueError as error:
        raise Invalid(str(error), field="egress_allow") from None


def job_allow_list(
    settings: Settings, profile: Sequence[str], requested: Sequence[str] | None
) -> list[str]:
    """The list a job runs with (policy.job_list); Invalid (422) when it asks for more
    than its profile's list and EGRESS_ALLOW allow."""
    try:
        limit = policy.ceiling(settings.egress_allow)
        return policy.job_list(profile, requested, limit, bool(settings.egress_allow_private))
    except ValueError as error:  # NotAllowed, or an EGRESS_ALLOW check_settings let by
        raise Invalid(f"egress.allow: {error}", field="egress") from None
