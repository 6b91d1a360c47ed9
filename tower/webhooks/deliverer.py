"""Every replica's webhook deliverer: claims due deliveries from the outbox and sends them.

It claims when it has a free slot (WEBHOOK_CONCURRENCY in flight at most): at start, on
a WEBHOOK_DUE notification, when a send ends, after the LISTEN connection comes back,
when the earliest scheduled retry comes due, and every POLL_INTERVAL as a fallback.
A claimed delivery is held for WEBHOOK_TIMEOUT plus a margin; a replica killed mid-send
leaves it to come due again for any replica once that lapses (see queries.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import httpx

from tower.db import channels
from tower.db.notify import NotifyHub
from tower.db.outage import DATABASE_ERRORS
from tower.db.pool import Pool
from tower.observability.metrics import TowerMetrics
from tower.settings import Settings
from tower.webhooks import queries, sender
from tower.webhooks.queries import Answer, Claimed

log = logging.getLogger(__name__)

# Beyond the HTTP timeout, the time a sender may need to resolve and to record the answer.
LEASE_MARGIN = 5.0
SHORTEST_WAIT = 0.01


class Deliverer:
    def __init__(
        self,
        settings: Settings,
        pool: Pool,
        hub: NotifyHub,
        secret_key: bytes,
        metrics: TowerMetrics,
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._hub = hub
        self._metrics = metrics
        self._policy = sender.Policy(
            key=secret_key,
            timeout=float(settings.webhook_timeout),
            allow_private=settings.webhook_allow_private,
            max_attempts=settings.webhook_max_attempts,
            retry_base=settings.webhook_retry_base,
            retry_max=settings.webhook_retry_max,
        )
        self._lease = float(settings.webhook_timeout) + LEASE_MARGIN
        self._client: httpx.AsyncClient | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._loop_task: asyncio.Task[None] | None = None
        self._in_flight: dict[asyncio.Task[None], Claimed] = {}

    async def start(self) -> None:
        self._client = sender.new_client()
        self._hub.on(channels.WEBHOOK_DUE, self._on_due)
        self._hub.on_reconnect(self._wake.set)
        self._loop_task = asyncio.create_task(self._loop(), name="webhook-deliverer")

    async def stop(self) -> None:
        """Stop claiming; cut in-flight sends short and hand their deliveries back at once."""
        self._stopping = True
        self._wake.set()
        if self._loop_task is not None:
            await self._loop_task
        for task in self._in_flight:
            task.cancel()
        await asyncio.gather(*self._in_flight, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    def _on_due(self, _payload: str) -> None:
        self._wake.set()

    # --- claiming -----------------------------------------------------------------

    async def _loop(self) -> None:
        while not self._stopping:
            self._wake.clear()  # before claiming: a wake-up during the claim is kept
            wait = self._settings.poll_interval
            try:
                free = self._settings.webhook_concurrency - len(self._in_flight)
                if free > 0:
                    self._launch_all(await self._claim(free))
                wait = await self._until_next_due(wait)
            except DATABASE_ERRORS as error:
                log.warning("webhook claim failed, retrying: %r", error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def _claim(self, free: int) -> list[Claimed]:
        async with self._pool.acquire() as connection:
            return await queries.claim_due(
                connection, free, self._lease, self._settings.webhook_max_attempts
            )

    async def _until_next_due(self, poll: float) -> float:
        seconds = await queries.seconds_to_next_due(self._pool)
        if seconds is None:
            return poll
        return min(poll, max(seconds, SHORTEST_WAIT))

    def _launch_all(self, claimed: list[Claimed]) -> None:
        for delivery in claimed:
            task = asyncio.create_task(self._deliver(delivery), name=delivery.delivery_id)
            self._in_flight[task] = delivery
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(task, None)
        self._wake.set()

    # --- sending ------------------------------------------------------------------

    async def _deliver(self, claimed: Claimed) -> None:
        assert self._client is not None
        try:
            answer = await sender.attempt(self._client, claimed, self._policy)
        except asyncio.CancelledError:
            await self._hand_back(claimed)
            raise
        self._metrics.webhook_attempt(_outcome(answer))
        try:
            async with self._pool.acquire() as connection:
                moved = await queries.complete(connection, claimed, answer)
        except DATABASE_ERRORS as error:
            # The row comes due again when its hold lapses: sent again, same webhook-id.
            log.warning("delivery %s: answer not recorded: %r", claimed.delivery_id, error)
            return
        if not moved:
            log.info("delivery %s: taken over by another replica meanwhile", claimed.delivery_id)

    async def _hand_back(self, claimed: Claimed) -> None:
        with contextlib.suppress(*DATABASE_ERRORS):
            async with self._pool.acquire() as connection:
                await queries.release(connection, claimed)


def _outcome(answer: Answer) -> str:
    """The attempt's outcome label: delivered, retry, failed, stopped or refused."""
    if answer.status == "pending":
        return "retry"
    if answer.status == "failed" and (answer.error or "").startswith("refused:"):
        return "refused"
    return answer.status
