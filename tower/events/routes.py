"""The event streams (docs/events.md). Same key as the jobs API."""

from __future__ import annotations

from collections.abc import AsyncIterator
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


@router.get("/jobs/{job_id}/events", **STREAM)  # type: ignore[arg-type]
async def job_events(
    job_id: str,
    db: Db,
    hub: Hub,
    settings: SettingsDep,
    metrics: Metrics,
    last_event_id_header: LastEventHeader = None,
    last_event_id: LastEventQuery = None,
) -> StreamingResponse:
    after = _after(last_event_id_header, last_event_id)
    stream = await service.job_events(db, hub, job_id, after, settings.events_keepalive_seconds)
    return _respond(stream, metrics)


@router.get("/events", **STREAM)  # type: ignore[arg-type]
async def state_events(
    db: Db,
    hub: Hub,
    settings: SettingsDep,
    metrics: Metrics,
    last_event_id_header: LastEventHeader = None,
    last_event_id: LastEventQuery = None,
) -> StreamingResponse:
    after = _after(last_event_id_header, last_event_id)
    stream = service.state_events(db, hub, after, settings.events_keepalive_seconds)
    return _respond(stream, metrics)
