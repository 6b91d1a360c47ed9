"""The request gate: what is refused before the app reads a byte of a request's body.

A route's body is read (and parsed) before its dependencies run, so without this a 300 MB
`POST /jobs` with no key was read whole, and parsed, before `require_key` answered 401.
This plain ASGI middleware (see tower/web/headers.py for why not BaseHTTPMiddleware):

- answers 421 to a Host header ALLOWED_HOSTS does not allow (tower/web/hosts.py: a keyless
  tower answers only its loopback names, so a page using DNS rebinding cannot reach it);
- answers 401 at once to a write (POST, PUT, PATCH, DELETE) without a valid key (none
  at all is one only on a tower without TOWER_API_KEY), and 403 to one with a `read`
  key, which may write nothing: every write route needs a key that writes. It asks
  `require_key` itself, so there is one check, and leaves the caller it found for the
  route; the routes keep theirs (reads need it too, and it is the defence in depth
  should this gate ever be left out);
- answers 415 to a write whose body (announced by Content-Length or Transfer-Encoding) is
  not declared JSON: every route with a body takes JSON, so anything else would be read
  whole only to fail validation; and a cross-site page can send text/plain or a form
  without a CORS preflight, never application/json;
- answers 413 at once when Content-Length is above MAX_REQUEST_BYTES, and counts a body
  sent without one as it arrives: once past the cap, the app's reading fails and its
  answer is replaced by the 413.

Routes that stream a raw body (POST /uploads) are named by the app with their own cap;
their content types are theirs to check.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tower.errors import (
    Forbidden,
    PayloadTooLarge,
    TowerError,
    Unauthorized,
    UnsupportedMediaType,
)
from tower.settings import Settings
from tower.web.deps import require_key
from tower.web.errors import (
    OUTAGE_ERRORS,
    RETRY_AFTER_SECONDS,
    STATEMENT_ERRORS,
    UNAVAILABLE,
    log_outage,
    render,
)
from tower.web.hosts import HostRule

WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
WRITES_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})
JSON = "application/json"
SHOWN_HOST_CHARS = 100


class MisdirectedHost(TowerError):
    status_code = 421


class DatabaseUnavailable(TowerError):
    status_code = 503
    retry_after = RETRY_AFTER_SECONDS


class _BodyCut(Exception):
    """Raised to the app by `receive` when the body passes the cap."""


class RequestGate:
    def __init__(
        self,
        app: ASGIApp,
        settings: Settings,
        streamed: Mapping[str, tuple[int, str]] | None = None,
    ) -> None:
        self.app = app
        self.settings = settings
        self.cap = settings.max_request_bytes
        self.hosts = HostRule(settings)
        # POST path -> (its body cap, the setting that says so), for routes that take a raw
        # body rather than JSON.
        self.streamed = dict(streamed or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = await self._refusal(scope)
        if refusal is not None:
            await _answer(refusal, scope, receive, send)
            return
        await self._capped(scope, receive, send)

    async def _refusal(self, scope: Scope) -> TowerError | None:
        """What to answer without reading the body, if anything."""
        host = _header(scope, b"host")
        if not self.hosts.allows(host):
            return _misdirected(host)
        if scope["method"] in WRITES:
            try:
                caller = await require_key(Request(scope), self.settings)
            except Unauthorized as exc:
                return exc
            except STATEMENT_ERRORS:
                raise
            except OUTAGE_ERRORS as exc:
                # A stored key is looked up in PostgreSQL: out here, not in a route, the
                # app's outage handler does not answer for it.
                log_outage(scope["method"], scope["path"], exc)
                return DatabaseUnavailable(UNAVAILABLE["detail"])
            if caller.role == "read":
                return Forbidden("A read key cannot change anything")
        if self._must_be_json(scope) and _has_body(scope) and not _is_json(scope):
            return UnsupportedMediaType(f"Content-Type must be {JSON}")
        length = _content_length(scope)
        if length is not None and length > self._cap(scope):
            return self._too_large(scope)
        return None

    def _must_be_json(self, scope: Scope) -> bool:
        return scope["method"] in WRITES_WITH_BODY and not self._is_streamed(scope)

    def _is_streamed(self, scope: Scope) -> bool:
        return scope["method"] == "POST" and scope["path"] in self.streamed

    def _limit(self, scope: Scope) -> tuple[int, str]:
        if self._is_streamed(scope):
            return self.streamed[scope["path"]]
        return self.cap, "MAX_REQUEST_BYTES"

    def _cap(self, scope: Scope) -> int:
        return self._limit(scope)[0]

    def _too_large(self, scope: Scope) -> PayloadTooLarge:
        cap, setting = self._limit(scope)
        return PayloadTooLarge(f"Request body is larger than {setting} ({cap} bytes)")

    async def _capped(self, scope: Scope, receive: Receive, send: Send) -> None:
        cap = self._cap(scope)
        received = 0
        cut = False
        started = False

        async def counted_receive() -> Message:
            nonlocal received, cut
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    cut = True
                    raise _BodyCut
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if cut:
                return  # the app's answer to a cut body: ours replaces it
            started = started or message["type"] == "http.response.start"
            await send(message)

        with contextlib.suppress(_BodyCut):
            await self.app(scope, counted_receive, guarded_send)
        if cut and not started:
            await _answer(self._too_large(scope), scope, receive, send)


def _misdirected(host: str | None) -> MisdirectedHost:
    shown = repr(host[:SHOWN_HOST_CHARS]) if host else "(none)"
    return MisdirectedHost(
        f"This tower does not answer to Host {shown}: list it in ALLOWED_HOSTS "
        "(a tower without TOWER_API_KEY answers only localhost, 127.0.0.1 and [::1])"
    )


def _header(scope: Scope, wanted: bytes) -> str | None:
    for name, value in scope["headers"]:
        if name == wanted:
            return str(value.decode("latin-1"))
    return None


def _content_length(scope: Scope) -> int | None:
    value = _header(scope, b"content-length")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None  # the server refuses a malformed one before the app sees it


def _has_body(scope: Scope) -> bool:
    return bool(_content_length(scope)) or _header(scope, b"transfer-encoding") is not None


def _is_json(scope: Scope) -> bool:
    """application/json or application/<anything>+json, parameters aside: what FastAPI
    parses as JSON."""
    media_type = (_header(scope, b"content-type") or "").partition(";")[0].strip().lower()
    kind, _, subtype = media_type.partition("/")
    return kind == "application" and (subtype == "json" or subtype.endswith("+json"))


async def _answer(exc: TowerError, scope: Scope, receive: Receive, send: Send) -> None:
    await render(exc)(scope, receive, send)
