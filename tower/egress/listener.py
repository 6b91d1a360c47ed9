"""Tower's answers to the egress proxy's helpers, on listeners of their own.

Like the gateway's token check (tower/gateway/listener.py, whose slots and servers this
reuses), never on the API port. Where tower runs the proxy, on Unix sockets in the
directory of GATEWAY_AUTH_SOCKET, which the proxy container mounts read-only: each replica
on the host answers on its own slot, `egress-N.sock`, held by a lock on `egress-N.lock`;
the proxy's helpers try slot 0 first, then the others (egress/helper.py), and any replica
answers for any job. In compose, where the proxy is a service of its own, also on host:port
(EGRESS_LISTEN) on the network the towers share with it, as GATEWAY_AUTH_LISTEN is for the
gateway: kept off any other network, every question about a request carries the job's
token (which only the proxy sees, in the request's credentials), as the gateway's do, and
every report of a request's end the tag tower's yes gave it (tower/egress/tags.py).

Routes (JSON bodies, bounded; the helpers are the only callers):
  POST /egress/auth   {user, token}                       200 yes, 401 no
  POST /egress/check  {user, token, host, port, method, addresses, resolve_error, proxy}
                                                          200 go {tag}, 403 {reason}
  POST /egress/done   {entries: [{user, host, port, method, status, bytes, refused, tag}]}
                                                          204 (ends whose tag does not
                                                          verify are refused, counted)
  GET  /egress/health                                     200 (the proxy's probe of us)
503 whenever the database cannot be asked: the helper then asks another slot, and the
proxy refuses rather than guess.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tower.db.outage import DATABASE_ERRORS
from tower.db.pool import Pool
from tower.egress import service
from tower.gateway.listener import SlotListeners
from tower.observability.metrics import TowerMetrics
from tower.settings import Settings, egress_managed, gateway_auth_socket

log = logging.getLogger(__name__)

MAX_BODY = 256 * 1024
MAX_CONCURRENCY = 1024
Text = Annotated[str, Field(max_length=512)]


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class AuthBody(Body):
    user: Text
    token: Text


class CheckBody(Body):
    user: Text
    token: Text
    host: Annotated[str, Field(min_length=1, max_length=service.MAX_HOST_CHARS)]
    port: int = Field(ge=1, le=65535)
    method: Annotated[str, Field(max_length=32)] = ""
    addresses: list[Annotated[str, Field(max_length=64)]] = Field(default=[], max_length=64)
    resolve_error: Text | None = None
    # The proxy instance asking: its container's host name and start time.
    proxy: Annotated[str, Field(max_length=128)] = ""


class EndedBody(Body):
    user: Text
    host: Annotated[str, Field(max_length=service.MAX_HOST_CHARS)]
    port: int = Field(ge=0, le=65535)
    method: Annotated[str, Field(max_length=32)] = ""
    status: int = Field(default=0, ge=0, le=999)
    bytes: int = Field(default=0, ge=0)
    # Squid refused it after tower's yes: the name resolved, when squid connected, to an
    # address its denied_destination ACL refuses.
    refused: bool = False
    # The tag tower's yes gave the request (tower/egress/tags.py).
    tag: Annotated[str, Field(max_length=64)] = ""


class DoneBody(Body):
    entries: list[EndedBody] = Field(max_length=1000)


def egress_socket(settings: Settings) -> Path:
    """The base name of the slots: beside the gateway's token-check sockets."""
    return gateway_auth_socket(settings).with_name("egress.sock")


async def _body(request: Request, model: type[Body]) -> Any:
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY:
            return None
    try:
        return model.model_validate_json(raw)
    except ValidationError:
        return None


def egress_app(pool: Pool, settings: Settings, metrics: TowerMetrics, key: bytes) -> Starlette:
    """The routes; `key` signs the tags of the requests let go (service.end_key)."""
    warned = False

    async def auth(request: Request) -> Response:
        body = await _body(request, AuthBody)
        if body is None:
            return Response(status_code=400)
        ok = await service.authenticate(pool, body.user, body.token)
        return Response(status_code=200 if ok else 401)

    async def check(request: Request) -> Response:
        body = await _body(request, CheckBody)
        if body is None:
            return JSONResponse({"reason": "a malformed question"}, status_code=400)
        question = service.Question(
            body.user,
            body.token,
            body.host,
            body.port,
            body.method,
            body.addresses,
            body.resolve_error,
            body.proxy,
        )
        decision = await service.decide(pool, settings, metrics, key, question)
        if decision.reason is None:
            return JSONResponse({"allowed": True, "tag": decision.tag})
        return JSONResponse({"allowed": False, "reason": decision.reason}, status_code=403)

    async def done(request: Request) -> Response:
        nonlocal warned
        body = await _body(request, DoneBody)
        if body is None:
            return Response(status_code=400)
        entries = [
            service.Ended(e.user, e.host, e.port, e.method, e.status, e.bytes, e.refused, e.tag)
            for e in body.entries
        ]
        ends = await service.ended(pool, metrics, key, entries)
        if ends.forged and not warned:
            # Once per replica: a flood would fill the log; the metric counts them all.
            warned = True
            log.warning(
                "refused %d reported end(s) of egress requests whose tag tower did not make "
                "(counted in tower_egress_ends_refused_total): is something other than the "
                "egress proxy reaching this listener?",
                ends.forged,
            )
        return Response(status_code=204)

    async def health(_request: Request) -> Response:
        return Response(status_code=200)

    def guarded(handler: Any) -> Any:
        async def answer(request: Request) -> Response:
            try:
                response: Response = await handler(request)
            except DATABASE_ERRORS as exc:
                log.warning("egress proxy question not answered: %r", exc)
                return Response(status_code=503)
            return response

        return answer

    return Starlette(
        routes=[
            Route("/egress/auth", guarded(auth), methods=["POST"]),
            Route("/egress/check", guarded(check), methods=["POST"]),
            Route("/egress/done", guarded(done), methods=["POST"]),
            Route("/egress/health", health, methods=["GET"]),
        ]
    )


class EgressListener(SlotListeners):
    """The egress app on this replica's slot (where tower runs the proxy) and on
    EGRESS_LISTEN (when set), until stop()."""

    def __init__(self) -> None:
        # The helpers ask at most ~300 questions at once (9 processes of 32 threads): a
        # flood beyond this bound is not the proxy's, and gets 503.
        super().__init__("egress listener", MAX_CONCURRENCY)

    @classmethod
    async def start(cls, settings: Settings, pool: Pool, metrics: TowerMetrics) -> EgressListener:
        service.check_settings(settings)
        listener = cls()
        app = egress_app(pool, settings, metrics, await service.end_key(pool))
        base = egress_socket(settings) if egress_managed(settings) else None
        await listener.serve(app, base, settings.egress_listen, "egress_listen")
        return listener
