"""The one handler that renders a TowerError (and FastAPI's validation errors) as JSON,
and the one that turns a database outage into a 503 the load balancer fails over on."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from tower.db.outage import CONNECTION_ERRORS
from tower.errors import TowerError, Unauthorized, one_line

log = logging.getLogger(__name__)

# The connection, not the statement, failed: PostgreSQL is down, restarting or out of
# reach, or the pool could not hand out a connection in time (TimeoutError). Statement
# errors (a DataError, a unique violation) are bugs or 4xx answers, never mapped here.
OUTAGE_ERRORS: tuple[type[Exception], ...] = (
    *(error for error in CONNECTION_ERRORS if issubclass(error, Exception)),
    ConnectionRefusedError,
    asyncpg.CannotConnectNowError,
    asyncpg.ConnectionDoesNotExistError,
    TimeoutError,
)
# InterfaceError is mostly the connection, but these subclasses are the client refusing
# the statement (asyncpg's argument-encoding DataError and ClientConfigurationError are
# ValueErrors): bugs, left to the 500 they were.
STATEMENT_ERRORS: tuple[type[Exception], ...] = (
    ValueError,
    asyncpg.UnsupportedClientFeatureError,
    asyncpg.UnsupportedServerFeatureError,
)
RETRY_AFTER_SECONDS = 2
UNAVAILABLE = {"detail": "The database is unavailable; retry shortly"}


def render(exc: TowerError) -> JSONResponse:
    """A TowerError as tower answers it, wherever it is raised (a route, the request gate)."""
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    return JSONResponse(exc.body(), status_code=exc.status_code, headers=headers)


async def _handle_tower_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TowerError)
    return render(exc)


async def _handle_validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [_plain_error(error) for error in exc.errors()]
    return JSONResponse({"detail": errors}, status_code=422)


def _plain_error(error: Any) -> dict[str, Any]:
    # Pydantic's ctx may hold exceptions that are not JSON-serialisable.
    loc = list(error.get("loc", ()))
    return {"loc": loc, "msg": str(error.get("msg", "")), "type": error.get("type")}


async def _handle_database_outage(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, STATEMENT_ERRORS):
        raise exc
    log_outage(request.method, request.url.path, exc)
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    return JSONResponse(UNAVAILABLE, status_code=503, headers=headers)


def log_outage(method: str, path: str, exc: Exception) -> None:
    """One line per failed request, no traceback: an outage fails hundreds a second."""
    reason = f"{type(exc).__name__}: {one_line(exc)}"
    log.warning("database unavailable: %s %s: %s", method, path, reason)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(TowerError, _handle_tower_error)
    app.add_exception_handler(RequestValidationError, _handle_validation_error)
    for error in dict.fromkeys(OUTAGE_ERRORS):
        app.add_exception_handler(error, _handle_database_outage)
