"""The event streams (docs/events.md). Same key as the jobs API."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse

from tower.events import service, sse
from tower.web.deps import CurrentCaller, Db, Hub, Metrics, SettingsDep, require_key
from tower.web.openapi import SECURED
from tower.web.streams import HeldStream, Limits, StreamKey, revocation_of

router = APIRouter(tags=["events"], dependencies=[Depends(require_key)])

# Event ids are bigints; a longer number cannot be one.
EVENT_ID = r"^[0-9]{1,18}$"

LastEventHeader = Annotated[
    str | None,
    Header(
        alias="Last-Event-ID",
        pattern=EVENT_ID,
        description="Resume after this event id (sent by EventSource when it reconnects).",
    ),
]
LastEventQuery = Annotated[
    int | None,
    Query(
        ge=0,
        le=10**18 - 1,
        description="Resume after this event id, for clients that cannot set headers. "
        "The Last-Event-ID header wins when both are given. On `/events`, "
        "`last_event_id=0` asks for the whole history still kept.",
    ),
]
STREAM = {
    "openapi_extra": SECURED,
    "response_class": StreamingResponse,
    "responses": {
        200: {"content": {sse.MEDIA_TYPE: {}}, "description": "an event stream"},
        429: {"description": "MAX_STREAMS_PER_KEY streams and long polls open (Retry-After)"},
        503: {"description": "MAX_STREAMS open on this replica (Retry-After)"},
    },
}


def _after(header: str | None, query: int | None) -> int | None:
    return int(header) if header is not None else query


@dataclass
class StreamContext:
    """What every event stream needs: the database, the wake-ups, its keepalive, its
    gauge and slot, and where to resume (None: not said)."""

    db: Db
    hub: Hub
    settings: SettingsDep
    metrics: Metrics
    limits: Limits
    key: StreamKey
    after: int | None
    # The tenant whose jobs the stream tells of; None: every tenant's.
    sees: str | None
    # Set if the key the stream was opened with is revoked (the stream then ends).
    revocation: AbstractContextManager[asyncio.Event | None]
    revoked: asyncio.Event | None = None

    @contextlib.contextmanager
    def holding(self) -> Iterator[ExitStack]:
        """A slot and the gauge, held until the stream given to `respond` ends; given
        back at once if the block raises before (an unknown job)."""
        with ExitStack() as hold:
            hold.enter_context(self.limits.slot(self.key))
            hold.enter_context(self.metrics.holding("events"))
            self.revoked = hold.enter_context(self.revocation)
            yield hold

    def respond(self, stream: AsyncIterator[str], hold: ExitStack) -> StreamingResponse:
        return HeldStream(stream, hold.pop_all(), sse.MEDIA_TYPE, sse.HEADERS, revoked=self.revoked)

    @property
    def keepalive(self) -> float:
        return self.settings.events_keepalive_seconds


async def stream_context(
    request: Request,
    db: Db,
    hub: Hub,
    settings: SettingsDep,
    metrics: Metrics,
    limits: Limits,
    key: StreamKey,
    caller: CurrentCaller,
    last_event_id_header: LastEventHeader = None,
    last_event_id: LastEventQuery = None,
) -> StreamContext:
    after = _after(last_event_id_header, last_event_id)
    revocation = revocation_of(request, caller)
    return StreamContext(db, hub, settings, metrics, limits, key, after, caller.sees, revocation)


Stream = Annotated[StreamContext, Depends(stream_context)]


@router.get("/jobs/{job_id}/events", **STREAM)  # type: ignore[arg-type]
async def job_events(job_id: str, ctx: Stream) -> StreamingResponse:
    """One job's events, from its first unless resumed; ends after its terminal state."""
    with ctx.holding() as hold:
        after = ctx.after or 0
        stream = await service.job_events(ctx.db, ctx.hub, job_id, after, ctx.keepalive, ctx.sees)
        return ctx.respond(stream, hold)


@router.get("/events", **STREAM)  # type: ignore[arg-type]
async def state_events(ctx: Stream) -> StreamingResponse:
    """Every job's state changes from now on: only those after the connection, unless a
    Last-Event-ID (or `last_event_id`) says where to resume; `?last_event_id=0` replays
    the whole history still kept. Never ends by itself."""
    with ctx.holding() as hold:
        after = ctx.after
        if after is None:  # a new client: replaying all history is a resume nobody asked for
            after = await service.newest_state_event(ctx.db)
        events = service.state_events(ctx.db, ctx.hub, after, ctx.keepalive, ctx.sees)
        return ctx.respond(events, hold)
