"""GET /metrics: the Prometheus text of this replica's metrics and the database's."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from tower.ops.health import docker_host_of

router = APIRouter(tags=["ops"])


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    state = request.app.state.tower
    state.metrics.docker_host(await docker_host_of(state.runner))
    body = await state.metrics.render(state.pool)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
