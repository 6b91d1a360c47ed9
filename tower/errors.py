"""One error base class carrying its HTTP status, and the one handler that renders it."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse


class TowerError(Exception):
    status_code = 500

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def body(self) -> dict[str, Any]:
        if self.field is None:
            return {"detail": self.message}
        return {"detail": [{"loc": ["body", self.field], "msg": self.message}]}


class BadRequest(TowerError):
    status_code = 400


class Unauthorized(TowerError):
    status_code = 401


class NotFound(TowerError):
    status_code = 404


class Timeout(TowerError):
    status_code = 408


class Conflict(TowerError):
    status_code = 409


class Invalid(TowerError):
    status_code = 422


class Unavailable(TowerError):
    status_code = 503


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
