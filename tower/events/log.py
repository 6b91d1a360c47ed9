"""A running job's log: its output, batched briefly and stored as job_events rows.

The runner writes output as it comes (bytes, from the event loop's thread). Chunks wait
at most FLUSH_DELAY, or until BATCH_BYTES are pending, then one lease-fenced statement
stores them all: a replica that lost the job adds nothing, and stops trying. A failed
write (database unreachable) keeps its chunks for the next try. `close()` stores what
is left before the job's final state is written, so the log precedes its terminal event.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
import time

import asyncpg

from tower.db.outage import CONNECTION_ERRORS
from tower.db.pool import Pool
from tower.events import queries
from tower.execution.runner import ClaimedJob, OutputStream

log = logging.getLogger(__name__)

FLUSH_DELAY = 0.05  # seconds a chunk may wait for others to share its write
BATCH_BYTES = 64 * 1024  # pending this much, write at once
CHUNK_CHARS = 64 * 1024  # one event's text at most; longer output is several events
RETRY_DELAY = 0.5
# A write that failed for one of these is tried again; any other failure (a statement the
# database refuses) drops that batch, loudly, rather than hold up the job's end.
RETRYABLE = CONNECTION_ERRORS
TRUNCATED = "\n[parpaing: log truncated: the job wrote more than {limit} bytes of output]\n"


STREAMS: tuple[OutputStream, ...] = ("stdout", "stderr")


class JobLog:
    def __init__(self, pool: Pool, job: ClaimedJob, max_bytes: int, close_deadline: float) -> None:
        self._pool = pool
        self._job = job
        self._max_bytes = max_bytes
        self._close_deadline = close_deadline
        self._decoders = {
            stream: codecs.getincrementaldecoder("utf-8")(errors="replace") for stream in STREAMS
        }
        self._pending: list[tuple[OutputStream, str]] = []
        self._pending_chars = 0
        self._received = 0
        self._full = asyncio.Event()
        self._fenced = False
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    def write(self, stream: OutputStream, data: bytes) -> None:
        if self._fenced or self._closing or not data:
            return
        self._received += len(data)
        over = self._received - self._max_bytes
        if over >= len(data):
            return  # already truncated, and said so
        self._append(stream, self._decoders[stream].decode(data[: len(data) - max(over, 0)]))
        if over >= 0:
            self._append("stderr", TRUNCATED.format(limit=self._max_bytes))
        if self._task is None:
            self._task = asyncio.create_task(self._flush_loop(), name=f"log-{self._job.job_id}")

    async def close(self) -> None:
        """Store what is pending; gives up at the deadline if the database stays away."""
        for stream in STREAMS:
            self._append(stream, self._decoders[stream].decode(b"", final=True))
        self._closing = True
        if self._task is not None:
            self._full.set()
            try:
                await self._task
            except Exception:  # a bug here must not keep the job from finishing
                log.exception("job %s: its log writer failed", self._job.job_id)
        deadline = time.monotonic() + self._close_deadline
        while self._pending and not self._fenced and time.monotonic() < deadline:
            if not await self._flush():
                await asyncio.sleep(RETRY_DELAY)
        if self._pending and not self._fenced:
            log.error("job %s: %d log chunks not stored", self._job.job_id, len(self._pending))

    def _append(self, stream: OutputStream, text: str) -> None:
        if not text:
            return
        text = text.replace("\x00", "\ufffd")  # jsonb cannot hold NUL
        last = self._pending[-1] if self._pending else None
        if last is not None and last[0] == stream and len(last[1]) < CHUNK_CHARS:
            self._pending.pop()
            self._pending_chars -= len(last[1])
            text = last[1] + text
        for start in range(0, len(text), CHUNK_CHARS):
            piece = text[start : start + CHUNK_CHARS]
            self._pending.append((stream, piece))
            self._pending_chars += len(piece)
        if self._pending_chars >= BATCH_BYTES:
            self._full.set()

    async def _flush_loop(self) -> None:
        try:
            while self._pending and not self._fenced:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), FLUSH_DELAY)
                if not await self._flush():
                    if self._closing:
                        return  # close() retries, up to its deadline
                    await asyncio.sleep(RETRY_DELAY)
        finally:
            self._task = None

    async def _flush(self) -> bool:
        """Write everything pending in one statement; False if it must be retried."""
        batch, self._pending, self._pending_chars = self._pending, [], 0
        self._full.clear()
        if not batch:
            return True
        try:
            async with self._pool.acquire() as connection:
                stored = await connection.fetch(
                    queries.INSERT_LOG_CHUNKS,
                    self._job.job_id,
                    self._job.lease_token,
                    [stream for stream, _ in batch],
                    [text for _, text in batch],
                )
        except RETRYABLE as error:
            log.warning("job %s: storing its log failed, will retry: %r", self._job.job_id, error)
            self._pending[:0] = batch
            self._pending_chars = sum(len(text) for _, text in self._pending)
            return False
        except asyncpg.PostgresError:
            log.exception("job %s: %d log chunks refused and dropped", self._job.job_id, len(batch))
            return True
        self._fenced = not stored  # the job is no longer ours: its log is not ours to add to
        return True
