"""Caps on the requests a client holds open: event streams and long polls.

Each takes a slot for its lifetime: MAX_STREAMS per replica (past it, 503: another
replica may have room) and MAX_STREAMS_PER_KEY per API key (past it, 429: that client
holds too many). Without a cap, a thousand idle streams slowed every other request.
A slot is given back however the request ends: done, failed, or its client gone. One
opened with a stored API key also ends when that key is revoked (a stream at once, a long
poll with 401): a revoked key keeps nothing open.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import ExitStack
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from tower.access import Caller, KeyLookup
from tower.errors import TooManyRequests, TowerError, Unauthorized, Unavailable
from tower.settings import Settings
from tower.web.deps import SettingsDep, held

T = TypeVar("T")

# A full replica: soon, or another replica. A client over its own cap: once one of its
# streams has ended, which takes longer.
REPLICA_RETRY_AFTER = 2
KEY_RETRY_AFTER = 10


class StreamsFull(Unavailable):
    retry_after = REPLICA_RETRY_AFTER


class TooManyStreams(TooManyRequests):
    retry_after = KEY_RETRY_AFTER


class ClientGone(TowerError):
    """The client left before the answer (nginx's 499): nobody reads what is sent."""

    status_code = 499


class StreamLimits:
    """The replica's open slots, in all and per key (a hash of the key presented)."""

    def __init__(self, total: int, per_key: int) -> None:
        self.total = total
        self.per_key = per_key
        self._by_key: Counter[str] = Counter()

    @property
    def open(self) -> int:
        return self._by_key.total()

    @contextlib.contextmanager
    def slot(self, key: str) -> Iterator[None]:
        """Holds one slot for `key` while the block runs; raises at once when none is free."""
        if self._by_key[key] >= self.per_key:
            raise TooManyStreams(f"At most {self.per_key} open streams and long polls per key")
        if self.open >= self.total:
            raise StreamsFull("This replica holds as many open streams as it may; retry shortly")
        self._by_key[key] += 1
        try:
            yield
        finally:
            self._by_key[key] -= 1
            if not self._by_key[key]:
                del self._by_key[key]


def key_identity(request: Request, settings: Settings) -> str:
    """Who a slot is counted against: a hash of the key presented, never the key itself.
    A keyless tower cannot tell clients apart: they share one count."""
    if not settings.tower_api_key.get_secret_value():
        return ""
    presented = request.headers.get("authorization", "").partition(" ")[2]
    return hashlib.sha256(presented.encode()).hexdigest()


Limits = Annotated[StreamLimits, Depends(held("streams"))]


async def _stream_key(request: Request, settings: SettingsDep) -> str:
    return key_identity(request, settings)


StreamKey = Annotated[str, Depends(_stream_key)]


def revocation_of(
    request: Request, caller: Caller
) -> contextlib.AbstractContextManager[asyncio.Event | None]:
    """An event set if the caller's stored key is revoked while the block runs; None for
    TOWER_API_KEY and a keyless loopback request, which no revoke ends."""
    keys: KeyLookup | None = getattr(getattr(request.app.state, "tower", None), "keys", None)
    if keys is None or caller.key_id is None:
        return contextlib.nullcontext(None)
    return keys.revocation(caller.key_id)


async def until_revoked(content: AsyncIterator[str], revoked: asyncio.Event) -> AsyncIterator[str]:
    """`content`, ended as soon as `revoked` is set, even while it waits for its next event."""
    stop = asyncio.ensure_future(revoked.wait())
    try:
        while True:
            following = asyncio.ensure_future(anext(content))
            await asyncio.wait({following, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not following.done():
                following.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await following
                return
            try:
                yield following.result()
            except StopAsyncIteration:
                return
    finally:
        stop.cancel()
        # The wrapped stream's own clean-up (its subscriptions) runs now, not when collected.
        aclose = getattr(content, "aclose", None)
        if aclose is not None:
            await aclose()


class HeldStream(StreamingResponse):
    """A stream that keeps `hold` (its slot, its gauge) until it ends however it ends:
    the last event sent, the client gone, the server stopping, its key revoked."""

    def __init__(
        self,
        content: AsyncIterator[str],
        hold: ExitStack,
        media_type: str,
        headers: dict[str, str],
        revoked: asyncio.Event | None = None,
    ) -> None:
        if revoked is not None:
            content = until_revoked(content, revoked)
        super().__init__(content, media_type=media_type, headers=headers)
        self._content = content
        self._hold = hold

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with self._hold:
            try:
                await super().__call__(scope, receive, send)
            finally:
                # Cut off at a send, the generator would end only when collected.
                aclose = getattr(self._content, "aclose", None)
                if aclose is not None:
                    await aclose()


async def unless_gone(
    request: Request, work: Awaitable[T], revoked: asyncio.Event | None = None
) -> T:
    """`work`'s answer; cancelled, with ClientGone, if the client disconnects first, so
    a long poll nobody waits for any more gives its slot back at once; with 401 if the
    key it came with is revoked (`revoked` set) first."""
    answer = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(request))
    stop = asyncio.ensure_future((revoked or asyncio.Event()).wait())
    try:
        await asyncio.wait({answer, gone, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (answer, gone, stop):
            task.cancel()
    if answer.done() and not answer.cancelled():
        return answer.result()
    with contextlib.suppress(asyncio.CancelledError):
        await answer
    if revoked is not None and revoked.is_set():
        raise Unauthorized("The API key was revoked")
    raise ClientGone("The client disconnected")


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
