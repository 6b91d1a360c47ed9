"""The one handler that renders a TowerError (and FastAPI's validation errors) as JSON."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from tower.errors import TowerError, Unauthorized


async def _handle_tower_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TowerError)
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
    return JSONResponse(exc.body(), status_code=exc.status_code, headers=headers)


async def _handle_validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [_plain_error(error) for error in exc.errors()]
    return JSONResponse({"detail": errors}, status_code=422)


def _plain_error(error: Any) -> dict[str, Any]:
    # Pydantic's ctx may hold exceptions that are not JSON-serialisable.
    loc = list(error.get("loc", ()))
    return {"loc": loc, "msg": str(error.get("msg", "")), "type": error.get("type")}


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(TowerError, _handle_tower_error)
    app.add_exception_handler(RequestValidationError, _handle_validation_error)
