"""One error base class carrying its HTTP status; tower/web/errors.py is the one handler
that renders it (every layer raises these, none of them below the web face speaks HTTP)."""

from __future__ import annotations

from typing import Any


class TowerError(Exception):
    status_code = 500
    # Seconds after which the client may ask again (a Retry-After header), when it may.
    retry_after: int | None = None

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


class Forbidden(TowerError):
    status_code = 403


class NotFound(TowerError):
    status_code = 404


class Timeout(TowerError):
    status_code = 408


class Conflict(TowerError):
    status_code = 409


class TooManyRequests(TowerError):
    status_code = 429


class PayloadTooLarge(TowerError):
    status_code = 413


class UnsupportedMediaType(TowerError):
    status_code = 415


class Invalid(TowerError):
    status_code = 422


class Unavailable(TowerError):
    status_code = 503


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception as one line for a log or a message: white space folded, at most
    `limit` characters, its type's name when it says nothing."""
    return " ".join(str(exc).split())[:limit] or type(exc).__name__
