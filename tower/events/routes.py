"""The event streams (docs/events.md). Same key as the jobs API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import StreamingResponse

from tower.events import service, sse
from tower.web.deps import Db, Hub, Metrics, SettingsDep, require_key
from tower.web.openapi import SECURED

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
        "The Last-Event-ID header wins when both are given.",
    ),
]
STREAM = {
    "openapi_extra": SECURED,
    "response_class": StreamingResponse,
    "responses": {200: {"content": {sse.MEDIA_TYPE: {}}, "description": "an event stream"}},
}


def _after(header: str | None, query: int | None) -> int:
    return int(header) if header is not None else query or 0


def _respond(stream: AsyncIterator[str], metrics: Metrics) -> StreamingResponse:
    return StreamingResponse(
        _counted(stream, metrics), media_type=sse.MEDIA_TYPE, headers=sse.HEADERS
    )


async def _counted(stream: AsyncIterator[str], metrics: Metrics) -> AsyncIterator[str]:
    with metrics.holding("events"):
        async for frame in stream:
            yield frame


@dataclass(frozen=True)
class StreamContext:
    """What every event stream needs: the database, the wake-ups, its keepalive, its
    gauge, and where to resume."""

    db: Db
    hub: Hub
    settings: SettingsDep
    metrics: Metrics
    after: int

    def respond(self, stream: AsyncIterator[str]) -> StreamingResponse:
        return _respond(stream, self.metrics)

    @property
    def keepalive(self) -> float:
        return self.settings.events_keepalive_seconds


async def stream_context(
    db: Db,
    hub: Hub,
    settings: SettingsDep,
    metrics: Metrics,
    last_event_id_header: LastEventHeader = None,
    last_event_id: LastEventQuery = None,
) -> StreamContext:
    return StreamContext(db, hub, settings, metrics, _after(last_event_id_header, last_event_id))


Stream = Annotated[StreamContext, Depends(stream_context)]


@router.get("/jobs/{job_id}/events", **STREAM)  # type: ignore[arg-type]
async def job_events(job_id: str, ctx: Stream) -> StreamingResponse:
    stream = await service.job_events(ctx.db, ctx.hub, job_id, ctx.after, ctx.keepalive)
    return ctx.respond(stream)


@router.get("/events", **STREAM)  # type: ignore[arg-type]
async def state_events(ctx: Stream) -> StreamingResponse:
    return ctx.respond(service.state_events(ctx.db, ctx.hub, ctx.after, ctx.keepalive))
