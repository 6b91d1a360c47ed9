"""The event streams: one job's events, and every job's state changes, as SSE text.

Both subscribe to the LISTEN hub first, then read the table, then wait for a hint and
read again: a notification that came before the read is not needed, and one that comes
after wakes the stream. The table is the truth; a hint only says "read again".
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from tower.db.ids import JOB_ID
from tower.db.notify import NotifyHub
from tower.db.pool import Pool
from tower.db.statuses import TERMINAL_STATUSES
from tower.errors import NotFound
from tower.events import queries, sse
from tower.events.cursor import StateCursor
from tower.observability.queries import LAST_STATE_EVENT_ID

PAGE = 500
# While the all-jobs stream waits for running transactions to end, it reads again this
# often even without a hint (a transaction that wrote no event announces nothing).
SETTLE_RECHECK = 0.1

STATE_FIELDS = ("status", "attempt", "failure_reason", "exit_code")
ALL_JOBS_FIELDS = ("agent_id", "engine", "profile", *STATE_FIELDS)


async def job_events(
    pool: Pool, hub: NotifyHub, job_id: str, after: int, keepalive: float, sees: str | None
) -> AsyncIterator[str]:
    """The job's events after seq `after`; ends after the terminal state event.
    Raises NotFound (before streaming) for an unknown job, or another tenant's than
    `sees` (None: any tenant's)."""
    known = JOB_ID.match(job_id) and await pool.fetchval(queries.SELECT_STATUS, job_id, sees)
    if not known:
        raise NotFound(f"Job {job_id} not found")
    return _job_events(pool, hub, job_id, after, keepalive)


async def _job_events(
    pool: Pool, hub: NotifyHub, job_id: str, after: int, keepalive: float
) -> AsyncIterator[str]:
    quiet = _Quiet(keepalive)
    with hub.job_events(job_id) as hint:
        while True:
            hint.clear()
            rows = await pool.fetch(queries.SELECT_JOB_EVENTS, job_id, after, PAGE)
            if not rows:
                return  # the job was deleted (retention)
            events = [row for row in rows if row["seq"] is not None]
            for row in events:
                yield quiet.sent(_job_frame(job_id, row))
                after = row["seq"]
                if row["kind"] == "state" and row["data"]["status"] in TERMINAL_STATUSES:
                    return
            if len(events) == PAGE:
                continue
            if rows[0]["status"] in TERMINAL_STATUSES:
                return  # finished before it had events (older than the events table)
            await _woken(hint, quiet.left())
            if quiet.due():
                yield quiet.sent(sse.KEEPALIVE)


async def newest_state_event(pool: Pool) -> int:
    """Where a stream that starts "now" starts: the newest state event committed.
    Read before the answer starts, so whatever a client causes once it holds the
    answer's headers comes after it."""
    return int(await pool.fetchval(LAST_STATE_EVENT_ID))


async def state_events(
    pool: Pool, hub: NotifyHub, after: int, keepalive: float, sees: str | None
) -> AsyncIterator[str]:
    """Every job's state events after id `after`, in id order, never ending by itself:
    the tenant `sees`'s jobs' only (None: every tenant's). Others' events move the
    cursor like any, unsent."""
    cursor = StateCursor(after)
    quiet = _Quiet(keepalive)
    with hub.state_events() as hint:
        while True:
            hint.clear()
            rows = await pool.fetch(queries.SELECT_STATE_EVENTS, cursor.after, PAGE)
            events = [row for row in rows if row["id"] is not None]
            start = cursor.after
            bound = cursor.advance(
                rows[0]["oldest_running"], [row["id"] for row in events], len(events) == PAGE
            )
            for row in events:
                if start < row["id"] <= bound and sees in (None, row["tenant"]):
                    yield quiet.sent(sse.frame(row["id"], "state", _state_data(row)))
            if cursor.needs_marker:
                cursor.mark(await pool.fetchval(queries.TAKE_MARKER))
                continue  # at once: the writers of what was seen have most likely ended
            if len(events) == PAGE and bound == events[-1]["id"]:
                continue
            await _woken(
                hint, min(SETTLE_RECHECK, quiet.left()) if cursor.waiting else quiet.left()
            )
            if quiet.due():
                yield quiet.sent(sse.KEEPALIVE)


class _Quiet:
    """When the stream last sent something: a keep-alive goes out after `keepalive`
    seconds of silence, so proxies and clients keep the connection open."""

    def __init__(self, keepalive: float) -> None:
        self._keepalive = keepalive
        self._loop = asyncio.get_running_loop()
        self._last = self._loop.time()

    def sent(self, text: str) -> str:
        self._last = self._loop.time()
        return text

    def left(self) -> float:
        return max(self._last + self._keepalive - self._loop.time(), 0.0)

    def due(self) -> bool:
        return self.left() <= 0


async def _woken(hint: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(hint.wait(), seconds)


def _job_frame(job_id: str, row: Any) -> str:
    data: dict[str, Any] = row["data"]
    head = {"job_id": job_id, "seq": row["seq"]}
    if row["kind"] == "log":
        body = {"stream": data["stream"], "text": data["text"], "at": _at(row["created_at"])}
        return sse.frame(row["seq"], "log", head | body)
    if row["kind"] == "egress":
        # A decision of the egress proxy (tower/egress): host, port, allowed, bytes...
        return sse.frame(row["seq"], "egress", head | data | {"at": _at(row["created_at"])})
    state = {"status": data["status"], "at": _at(row["created_at"])}
    state |= {field: data.get(field) for field in STATE_FIELDS[1:]}
    return sse.frame(row["seq"], "state", head | state)


def _state_data(row: Any) -> dict[str, Any]:
    data: dict[str, Any] = row["data"]
    head = {"job_id": row["job_id"], "seq": row["seq"], "status": data["status"]}
    rest = {field: data.get(field) for field in ALL_JOBS_FIELDS if field != "status"}
    return head | {"at": _at(row["created_at"])} | rest


def _at(moment: datetime) -> str:
    return moment.isoformat()
