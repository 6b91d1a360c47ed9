"""The dispatcher: claims queued jobs up to the replica's capacity and runs them.

It claims when it has a free slot and something may be claimable: at start, on a
JOB_PENDING notification, after the LISTEN connection comes back, when a local job ends
if the last claim filled every free slot (so more may be waiting), and at least every
`poll_interval` as a fallback (notifications are hints). A slot freed while the queue
was last seen empty costs no query: under load that was one wasted claim per job. Every write
it makes about a job is fenced by the job's lease token (see queries.py).

Shutting down is two steps. `drain()` (on SIGTERM, before the HTTP side winds down)
stops claiming at once; `stop()` then gives the running jobs what is left of
`shutdown_grace_seconds`, counted from the drain, to finish (leases still renewed,
cancels still honoured), and hands back the rest through their leases: killed, then
requeued if attempts remain, else failed as tower_lost, fenced like any write.
`hurry()` (a second signal) ends the grace at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time

from tower.artifacts import store as artifacts
from tower.db import channels
from tower.db.group_commit import GroupCommit
from tower.db.notify import NotifyHub
from tower.db.outage import DATABASE_ERRORS
from tower.db.periodic import Periodic
from tower.db.pool import Pool, transaction
from tower.db.writes import write_with_retry
from tower.errors import TowerError, one_line
from tower.events.log import JobLog
from tower.execution.adoption import Adopting, Adoption
from tower.execution.runner import ClaimedJob, Gated, Runner, RunOutcome
from tower.observability.metrics import TowerMetrics
from tower.queue import queries
from tower.queue.leases import Leases
from tower.settings import Settings
from tower.workspaces import outputs, staging

log = logging.getLogger(__name__)

UNSTORED_DETAIL = 1000  # characters of the database's refusal kept in the job's error
# Seconds before claiming again after a claim passed over a tenant another claim held:
# that claim's statement lasts milliseconds, and what it leaves should not wait a poll.
CONTENDED_RETRY_SECONDS = 0.05


class Dispatcher:
    def __init__(
        self,
        settings: Settings,
        pool: Pool,
        hub: NotifyHub,
        runner: Runner,
        replica_id: str,
        metrics: TowerMetrics | None = None,
        *,
        statement_pool: Pool | None = None,
    ) -> None:
        self._settings = settings
        self._metrics = metrics or TowerMetrics(replica_id)
        self._pool = pool
        # Claims and finishes: single statements, so a pool without per-release reset.
        self._statements = statement_pool or pool
        self._hub = hub
        self._runner = runner
        self._replica_id = replica_id
        self._leases = Leases(pool, settings.lease_seconds)
        # Jobs that end together (a full slate of short jobs) share one commit.
        self._finishes = GroupCommit(self._statements, queries.finish_many, "job-finishes")
        self._heartbeat = Periodic(
            "lease-heartbeat", self._leases.renew_interval, self._leases.heartbeat
        )
        self._wake = asyncio.Event()
        # Whether a claim may find something: set by hints, cleared by a claim that
        # found less than it had room for.
        self._maybe_claimable = True
        # The last claim left a tenant's jobs for its running quota: a job ending anywhere
        # (JOB_FINISHED) may let them start.
        self._held_back = False
        self._contended = False
        self._last_claim = 0.0
        self._stopping = False
        self._grace_ends: float | None = None
        self._hurried = asyncio.Event()
        self._handing_back = False
        self._claim_task: asyncio.Task[None] | None = None
        self._supervisors: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._hub.on(channels.JOB_PENDING, self._on_pending)
        self._hub.on(channels.JOB_FINISHED, self._on_finished)
        self._hub.on(channels.JOB_CANCELLED, self._on_cancelled)
        self._hub.on_reconnect(self._on_reconnect)
        if isinstance(self._runner, Gated):
            self._runner.on_available(self._on_runner_available)
        await self._heartbeat.start()
        self._claim_task = asyncio.create_task(self._claim_loop(), name="dispatcher")

    def drain(self) -> None:
        """Claim nothing more; the jobs running now go on (the grace starts here)."""
        if self._grace_ends is None:
            grace = self._settings.shutdown_grace_seconds
            self._grace_ends = asyncio.get_running_loop().time() + grace
            log.info("draining: no new claims; %d running job(s) get %gs", len(self._leases), grace)
        self._stopping = True
        self._wake.set()

    def hurry(self) -> None:
        """Stop asked for again: the grace ends now, the running jobs are handed back."""
        self.drain()
        self._grace_ends = asyncio.get_running_loop().time()
        self._hurried.set()
        log.info("stop asked again: no more grace for %d running job(s)", len(self._leases))

    async def stop(self) -> None:
        """Drain, let running jobs finish within the grace, then stop the rest and hand
        their jobs back at once (fenced), rather than leaving them for the reaper."""
        self.drain()
        if self._claim_task is not None:
            await self._claim_task
        await self._wait_for_running()
        self._handing_back = True
        if self._leases.cancel_all():
            log.info("grace over: handing back %d job(s)", len(self._supervisors))
        await self._wait_for_hand_backs()
        await self._finishes.close()
        await self._heartbeat.stop()

    async def _wait_for_running(self) -> None:
        assert self._grace_ends is not None
        left = self._grace_ends - asyncio.get_running_loop().time()
        if not self._supervisors or left <= 0 or self._hurried.is_set():
            return
        finished = asyncio.ensure_future(asyncio.wait(set(self._supervisors)))
        hurried = asyncio.ensure_future(self._hurried.wait())
        # Cancelling these waits leaves the jobs themselves running.
        await asyncio.wait({finished, hurried}, timeout=left, return_when=asyncio.FIRST_COMPLETED)
        finished.cancel()
        hurried.cancel()

    async def _wait_for_hand_backs(self) -> None:
        """The hand-backs, and the outcomes still being written. An outcome waits for the
        database as long as the replica runs; once it stops, a lease more, then its job
        is left to the reaper."""
        if not self._supervisors:
            return
        supervisors = set(self._supervisors)
        _, stuck = await asyncio.wait(supervisors, timeout=self._settings.lease_seconds)
        for supervisor in stuck:
            log.error(
                "%s: outcome not stored, the database is away; left to the reaper",
                supervisor.get_name(),
            )
            supervisor.cancel()
        await asyncio.gather(*stuck, return_exceptions=True)

    # --- notifications ------------------------------------------------------------

    def _on_pending(self, _job_id: str) -> None:
        self._maybe_claimable = True
        self._wake.set()

    def _on_finished(self, _job_id: str) -> None:
        if self._held_back:
            self._maybe_claimable = True
            self._wake.set()

    def _on_reconnect(self) -> None:
        # Notifications sent while the LISTEN connection was down are lost.
        self._maybe_claimable = True
        self._wake.set()

    def _on_runner_available(self) -> None:
        # Docker answers again: whatever queued up meanwhile is claimable.
        self._maybe_claimable = True
        self._wake.set()

    def _on_cancelled(self, job_id: str) -> None:
        # The API already wrote 'cancelled'; only the execution is ours to stop.
        if self._leases.cancel(job_id):
            log.info("job %s: cancelled; stopping its run", job_id)

    # --- claiming -----------------------------------------------------------------

    async def _claim_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            # Cleared before claiming, so a wake-up or a hint that lands during the claim
            # is kept.
            self._wake.clear()
            free = self._free()
            overdue = loop.time() - self._last_claim >= self._settings.poll_interval
            if free > 0 and (self._maybe_claimable or overdue) and self._runner_ready():
                self._maybe_claimable = False
                self._last_claim = loop.time()
                if await self._claim_and_launch(free):
                    self._maybe_claimable = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._pause())

    def _free(self) -> int:
        return self._settings.max_concurrent_jobs - len(self._leases)

    def _pause(self) -> float:
        """Seconds until the next claim unless woken: the poll, or a moment after a claim
        that passed over a tenant another claim held (lifecycle.CLAIM, `contended`)."""
        poll = self._settings.poll_interval
        if self._contended and self._free() > 0:
            return min(CONTENDED_RETRY_SECONDS, poll)
        return poll

    def _runner_ready(self) -> bool:
        """Whether the runner can run jobs now: while its Docker daemon does not answer,
        a claim would only fail them, so nothing is claimed (the runner wakes us)."""
        return not isinstance(self._runner, Gated) or self._runner.unavailable() is None

    async def _claim_and_launch(self, free: int) -> bool:
        """Claim up to `free` jobs and start them; whether more may be waiting."""
        started = time.monotonic()
        try:
            async with self._statements.acquire() as connection:
                claim = await queries.claim_jobs(
                    connection,
                    self._replica_id,
                    self._settings.lease_seconds,
                    free,
                    (self._settings.tenant_max_running, self._settings.tenant_share),
                )
        except DATABASE_ERRORS as error:
            log.warning("claim failed, retrying: %r", error)
            return True
        self._held_back = claim.held_back
        jobs = claim.jobs
        self._contended = claim.contended and len(jobs) < free
        if claim.contended:
            self._metrics.claim_contended()
        # One statement claims them all: each job's share of its time.
        share = (time.monotonic() - started) / max(len(jobs), 1)
        for job in jobs:
            self._metrics.job_claimed(job.queued_seconds)
            self._metrics.job_phase("claim", share)
            self._launch(job)
        return len(jobs) == free or self._contended

    def adopt(self, adopted: Adoption) -> None:
        """Run a job adopted from a replica that died (tower/queue/adoption.py) as one
        claimed: its lease renewed, its log stored, its outcome written, all fenced by
        its new token. The runner follows its container (`Adopting.resume`)."""
        self._launch(adopted.job, adopted)

    def accepting(self) -> bool:
        """Whether jobs may still start here (adopted ones too): not once draining."""
        return not self._stopping

    def _launch(self, job: ClaimedJob, adopted: Adoption | None = None) -> None:
        # Its tail is stored before the finish, however long the database is away.
        output = JobLog(self._pool, job, self._settings.max_log_bytes, math.inf)
        work = self._run(job, output) if adopted is None else self._resume(adopted, output)
        # Registered before the next claim computes free capacity.
        run = asyncio.create_task(work, name=f"run-{job.job_id}")
        self._leases.add(job, run)
        supervisor = asyncio.create_task(
            self._supervise(job, run, output), name=f"job-{job.job_id}"
        )
        self._supervisors.add(supervisor)
        supervisor.add_done_callback(self._supervisors.discard)

    # --- running ------------------------------------------------------------------

    async def _resume(self, adopted: Adoption, output: JobLog) -> RunOutcome:
        assert isinstance(self._runner, Adopting)  # adopter_for adopts for no other
        return await self._runner.resume(adopted, output)

    async def _run(self, job: ClaimedJob, output: JobLog) -> RunOutcome:
        """Stage the job's workspace (its repository, its inputs), then run it; what was
        staged goes when the run ends, however it ends (cancellation included). A job
        without inputs or a repository goes straight on."""
        if not staging.has_inputs(job):
            return await self._runner.run(job, output)
        try:
            with self._metrics.timing("stage"):
                staged = await staging.stage(self._pool, job, self._settings)
        except Exception as error:
            log.warning("job %s: staging its inputs failed: %r", job.job_id, error)
            why = error.message if isinstance(error, TowerError) else one_line(error, 500)
            message = f"the job's workspace could not be staged: {why}"
            return RunOutcome(False, error=message, failure_reason="input")
        try:
            output.write("stderr", staged.summary().encode())
            prepared = dataclasses.replace(
                job, inputs=staged.inputs, workspace_commit=staged.commit
            )
            outcome = await self._runner.run(prepared, output)
            # The branch and pull request, from the clone, while it is still here.
            return await outputs.after_run(self._pool, self._settings, job, staged, outcome)
        finally:
            staged.discard()

    async def _supervise(
        self, job: ClaimedJob, run: asyncio.Task[RunOutcome], output: JobLog
    ) -> None:
        started = time.monotonic()
        try:
            await asyncio.wait({run})
            duration_ms = int((time.monotonic() - started) * 1000)
            # The log is stored before the final state, so it precedes the terminal event.
            await output.close()
            await self._settle(job, run, duration_ms)
        finally:
            self._leases.remove(job.job_id)
            self._wake.set()

    async def _settle(self, job: ClaimedJob, run: asyncio.Task[RunOutcome], ms: int) -> None:
        if not run.cancelled():
            outcome = _outcome_of(job, run)
            if outcome.requeue:
                await self._requeue(job, outcome)
            else:
                await self._finish(job, outcome, ms)
        elif self._handing_back:
            await self._release(job)
        # Otherwise it was cancelled, or its lease was lost: the row is not ours to write.

    async def _finish(self, job: ClaimedJob, outcome: RunOutcome, duration_ms: int) -> None:
        try:
            with self._metrics.timing("finish"):
                await self._store_artifacts(job, outcome)
                await self._finish_storing(job, outcome, duration_ms)
        finally:
            if outcome.artifacts is not None:
                outcome.artifacts.unlink(missing_ok=True)

    async def _finish_storing(self, job: ClaimedJob, outcome: RunOutcome, duration_ms: int) -> None:
        final = queries.Finish(
            status="completed" if outcome.succeeded else "failed",
            exit_code=outcome.exit_code,
            result=outcome.result,
            error=outcome.error,
            failure_reason=None if outcome.succeeded else outcome.failure_reason or "error",
            usage=outcome.usage,
            duration_ms=duration_ms,
        )

        # A result is worth waiting for through any database outage; the write stays fenced.
        try:
            written = await self._write_finish(job, final)
        except Exception as refused:
            # Refused, not lost: it would be refused again. Left alone, the job would be
            # reaped and run again; it ends failed instead, saying why.
            log.error("job %s: its outcome could not be stored", job.job_id, exc_info=refused)
            final = _unstored(final, refused)
            try:
                written = await self._write_finish(job, final)
            except Exception:
                log.exception("job %s: nor could its failure; left to the reaper", job.job_id)
                return
        if not written:
            log.info("job %s: result discarded; lease gone (cancelled or reaped)", job.job_id)
            return
        self._metrics.job_finished(final.status)
        self._metrics.job_ran(final.status, duration_ms / 1000, final.usage)

    async def _store_artifacts(self, job: ClaimedJob, outcome: RunOutcome) -> None:
        """What the run left in its workspace, stored before the job's final write (so a
        finished job's artifacts are there to read); an attempt's replace an earlier
        one's, even with none. A failure costs the artifacts, never the outcome."""
        if outcome.artifacts is None and job.attempt <= 1:
            return
        attempt = artifacts.Attempt(job.job_id, job.lease_token, job.attempt)

        async def write() -> bool:
            return await artifacts.store(self._pool, attempt, outcome.artifacts)

        try:
            await write_with_retry(write, what=f"job {job.job_id}: artifacts")
        except Exception as error:
            log.warning("job %s: its artifacts could not be stored: %r", job.job_id, error)

    async def _write_finish(self, job: ClaimedJob, final: queries.Finish) -> bool | None:
        """Fenced; retried while the connection fails, however long (a refusal is raised)."""

        async def write() -> bool:
            return await self._finishes.write(queries.FinishOf(job.job_id, job.lease_token, final))

        return await write_with_retry(write, what=f"job {job.job_id}: finish")

    async def _requeue(self, job: ClaimedJob, outcome: RunOutcome) -> None:
        """The infrastructure failed, not the job: back to the queue, the attempt not
        counted (lifecycle.REQUEUE, fenced). Left to the reaper if the write fails."""
        if outcome.artifacts is not None:
            outcome.artifacts.unlink(missing_ok=True)
        log.warning("job %s: requeued, the infrastructure failed: %s", job.job_id, outcome.error)
        try:
            written = await _requeue_write(self._pool, job)
        except Exception:
            log.exception("job %s: requeue refused; left to the reaper", job.job_id)
            return
        if not written:
            log.info("job %s: not requeued; lease gone (cancelled or reaped)", job.job_id)

    async def _release(self, job: ClaimedJob) -> None:
        async def write() -> str | None:
            async with transaction(self._pool) as connection:
                return await queries.release(connection, job.job_id, job.lease_token)

        # Stopping should not hang on a lost database: the reaper will hand the job back.
        deadline = time.monotonic() + self._settings.lease_seconds
        try:
            status = await write_with_retry(write, deadline, f"job {job.job_id}: hand-back")
        except Exception:
            log.exception("job %s: hand-back refused; left to the reaper", job.job_id)
            return
        if status == "failed":
            self._metrics.job_finished(status)
        log.info("job %s: handed back on stop (%s)", job.job_id, status or "left to the reaper")


async def _requeue_write(pool: Pool, job: ClaimedJob) -> bool:
    async with transaction(pool) as connection:
        return await queries.requeue(connection, job.job_id, job.lease_token)


def _unstored(final: queries.Finish, refused: Exception) -> queries.Finish:
    """The job failed, saying why its outcome could not be stored; nothing of that outcome
    but its exit code, since any of it may be what the database refused."""
    why = f"{type(refused).__name__}: {refused}".replace("\x00", "")[:UNSTORED_DETAIL]
    return queries.Finish(
        status="failed",
        exit_code=final.exit_code,
        result=None,
        error=f"the job's {final.status} outcome could not be stored ({why})",
        failure_reason="error",
        usage=None,
        duration_ms=final.duration_ms,
    )


def _outcome_of(job: ClaimedJob, run: asyncio.Task[RunOutcome]) -> RunOutcome:
    error = run.exception()
    if error is None:
        return run.result()
    log.error("job %s: runner raised", job.job_id, exc_info=error)
    return RunOutcome(False, error=f"runner error: {error!r}", failure_reason="error")
