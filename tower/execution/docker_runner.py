"""The Docker runner: each claimed job runs in its own hardened, single-use container.

Flow per docs/execution.md: spec → take a slot → deliver the bundle → wait → collect →
outcome; the slot is always discarded afterwards. Cancellation (job cancelled, lease
lost) kills the container before CancelledError goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast
from uuid import UUID

from tower.configs.models import Engine, Template
from tower.configs.store import ConfigStore
from tower.db.outage import DATABASE_ERRORS
from tower.db.pool import Pool
from tower.errors import TowerError
from tower.execution import bundle, protocol
from tower.execution.adoption import Adoption
from tower.execution.bundle import StreamedBundle, WorkerOutput
from tower.execution.docker import archive, containers, reattach
from tower.execution.docker.client import DockerCalls
from tower.execution.docker.hardening import bundle_volume_name
from tower.execution.docker.probe import ping_client
from tower.execution.docker.reattach import Counting, Replayed, Skipping
from tower.execution.docker.worker_stdout import Artifacts, Handover
from tower.execution.outcome import parse_outcome
from tower.execution.pool.warm import WarmPool
from tower.execution.queries import slot_adopted_away
from tower.execution.runner import (
    ClaimedJob,
    Output,
    OutputStream,
    Probe,
    RunnerHealth,
    RunOutcome,
    WorkspaceInput,
)
from tower.execution.slots import ContainerShape, Slot, SlotSource
from tower.execution.spec import JobSpec, build_spec
from tower.observability.metrics import TowerMetrics
from tower.settings import Settings

log = logging.getLogger(__name__)

# A health check's bound: /health answers within it even when the daemon hangs.
HEALTH_TIMEOUT = 2.0

# Seconds between asks while Docker does not answer under a running job.
DOCKER_RETRY = 1.0


@dataclass(frozen=True)
class Plan:
    spec: JobSpec
    engine: Engine
    inputs: tuple[WorkspaceInput, ...] = ()


def _bundle(spec: JobSpec, inputs: tuple[WorkspaceInput, ...]) -> bytes | StreamedBundle:
    """In memory without inputs (the warm job's fast path); streamed from files with."""
    return bundle.streamed_bundle(spec, inputs) if inputs else bundle.bundle_tar(spec)


# How a worker that reported its engine's success ended, as far as the outcome cares.
CLEAN_EXIT = containers.ExitInfo(-1, False)


def _engine_succeeded(output: WorkerOutput | None) -> bool:
    """Whether the worker reported a dry run or an engine that exited 0: then no OOM
    kill decided the job (an engine killed by it does not exit 0), and asking Docker
    (an inspect and an events query, two calls on every job's path) is skipped."""
    result = output.result if output is not None else None
    if result is None:
        return False
    return result.get("phase") == "dry_run" or result.get("exit_code") == 0


def _spooled(taken: Artifacts | None) -> Path | None:
    """The artifacts' file; None for none, or for those never copied out of the volume."""
    return taken if isinstance(taken, Path) else None


def failed(message: str) -> RunOutcome:
    return RunOutcome(False, error=message, failure_reason="error")


class DockerRunner:
    def __init__(
        self,
        settings: Settings,
        configs: ConfigStore,
        calls: DockerCalls,
        slots: SlotSource,
        metrics: TowerMetrics | None = None,
        host: Host | None = None,
        db: Pool | None = None,
    ) -> None:
        self._host = host
        # Asked whether a job was adopted away before its container is stopped.
        self._db = db
        self._settings = settings
        self._configs = configs
        self._calls = calls
        self._slots = slots
        self._metrics = metrics or TowerMetrics("")
        self._discards: set[asyncio.Task[None]] = set()

    async def run(self, job: ClaimedJob, output: Output) -> RunOutcome:
        try:
            # Off the event loop: rendering a profile's templates is untrusted work, and
            # it must never hold up lease heartbeats.
            with self._metrics.timing("plan"):
                plan = await asyncio.to_thread(self._plan, job)
                shape = await self._resolved(plan.spec.shape)
            with self._metrics.timing("take"):
                slot = await self._slots.take(job, shape)
        except TowerError as problem:
            return failed(problem.message)
        self._metrics.container_taken(slot.warm)
        return await self._in_slot(
            slot, job.lease_token, self._execute(slot, plan, _emitter(output))
        )

    async def _in_slot(
        self, slot: Slot, token: UUID, work: Coroutine[Any, Any, RunOutcome]
    ) -> RunOutcome:
        """`work`'s outcome; the slot discarded after, its container killed at once if cut
        short. Not when another replica adopted the job meanwhile (this one stalled past
        its lease): the container is then the adopter's, and its job goes on there."""
        ours = True
        try:
            return await work
        except asyncio.CancelledError:
            # Shielded: a second cancellation must not leave the container running.
            ours = not await asyncio.shield(self._adopted_away(slot, token))
            if ours:
                await asyncio.shield(self._calls(containers.kill, slot.container_id))
            raise
        except TowerError as problem:
            return failed(problem.message)
        finally:
            if ours:
                self._discard_soon(slot)

    async def _adopted_away(self, slot: Slot, token: UUID) -> bool:
        if self._db is None:
            return False
        try:
            return await slot_adopted_away(self._db, slot.slot_id, token)
        except DATABASE_ERRORS:
            return False  # not known to be adopted: stopped as before

    def _plan(self, job: ClaimedJob) -> Plan:
        """The job's spec from the configs this replica holds; unknown names fail the job."""
        profile = self._configs.profile(job.profile)
        if profile is None:
            raise TowerError(f"profile {job.profile!r} does not exist (or no longer parses)")
        engine = self._configs.engine(job.engine)
        if engine is None:
            raise TowerError(f"engine {job.engine!r} does not exist (or no longer parses)")
        templates = self._templates(profile.template_names())
        # Minted at claim; the gateway accepts it while this attempt runs, and only then.
        spec = build_spec(
            job.request,
            profile,
            engine,
            templates,
            self._settings,
            job.job_id,
            job.gateway_token,
            job.attempt,
        )
        spec = dataclasses.replace(spec, workspace_commit=job.workspace_commit)
        return Plan(spec, engine, job.inputs)

    def _templates(self, names: list[str]) -> dict[str, Template]:
        found = {name: self._configs.template(name) for name in names}
        return {name: template for name, template in found.items() if template is not None}

    async def _resolved(self, shape: ContainerShape) -> ContainerShape:
        """The shape with the image's ID instead of its tag, so a rebuilt image never
        runs a job in a container of the old one."""
        image = await self._calls(containers.image_id, shape.image)
        return dataclasses.replace(shape, image=image)

    async def _execute(self, slot: Slot, plan: Plan, emit: containers.Emit) -> RunOutcome:
        spec = plan.spec
        with self._metrics.timing("attach"):
            feed = await self._calls(containers.attach, slot.container_id)
        artifacts = Handover()
        counted = Counting(emit)
        try:
            delivered_at = time.time()
            with self._metrics.timing("bundle"):
                await self._calls(containers.deliver, feed, _bundle(spec, plan.inputs))
            with self._metrics.timing("run"):
                followed = await self._calls(
                    containers.follow_output,
                    feed,
                    float(spec.timeout_seconds),
                    counted,
                    protocol.output_cap(spec.output_limit),
                    protocol.artifact_cap(spec.artifact_limit),
                    artifacts,
                )
        except BaseException:
            artifacts.discard()
            containers.close_output(feed)
            raise
        containers.close_output(feed)  # already closed by the follow
        # A stream that ended short of a frame may have broken under a live worker.
        first = Replayed(followed.finished, followed.output is not None, followed.output)
        with self._metrics.timing("collect"):
            return await self._until_done(slot, plan, delivered_at, first, counted, artifacts)

    async def docker_host(self) -> str | None:
        host = getattr(self._slots, "docker_host", None)
        return host if isinstance(host, str) else None

    async def container_running(self, container_id: str) -> bool:
        return await self._calls(reattach.container_running, container_id)

    async def resume(self, adopted: Adoption, output: Output) -> RunOutcome:
        """Finish a job adopted from a replica that died: its container runs on (or has
        finished) on this Docker host. Its output is replayed from the container's log,
        skipping the bytes `adopted.stored` says the job's log already holds."""
        slot = Slot(
            adopted.slot_id, adopted.container_id, bundle_volume_name(adopted.slot_id), False
        )
        return await self._in_slot(
            slot, adopted.job.lease_token, self._follow(slot, adopted, output)
        )

    async def _follow(self, slot: Slot, adopted: Adoption, output: Output) -> RunOutcome:
        plan = await asyncio.to_thread(self._plan, adopted.job)
        counted = Counting(_emitter(output))
        counted.passed = dict(adopted.stored)
        return await self._until_done(slot, plan, adopted.started_at, None, counted, Handover())

    async def _until_done(
        self,
        slot: Slot,
        plan: Plan,
        since: float,
        followed: Replayed | None,
        emit: Counting,
        artifacts: Handover,
    ) -> RunOutcome:
        """The outcome, once the worker is done: following its output again from the
        container's log while the stream broke short of the done line and the container
        still runs (Docker restarted with live-restore), or from the start (`followed`
        None: an adopted job)."""
        try:
            ended, output = await self._finish(
                slot.container_id, plan.spec, since, followed, emit, artifacts
            )
            await self._copy_artifacts(slot.container_id, artifacts)
            outcome = parse_outcome(
                output,
                engine=plan.engine,
                spec=plan.spec,
                oom_killed=ended is not None and ended.oom_killed,
                timed_out=ended is None,
                max_result_size=self._settings.max_result_size,
            )
        except BaseException:
            artifacts.discard()
            raise
        return dataclasses.replace(outcome, artifacts=_spooled(artifacts.take()))

    async def _copy_artifacts(self, container_id: str, artifacts: Handover) -> None:
        """Artifacts the worker left in its bundle volume (large ones: see
        protocol.ARTIFACTS_FILE), copied out into a private file. A failed copy costs
        the artifacts, never the outcome."""
        wanted = artifacts.in_volume()
        if wanted is None:
            return
        try:
            await self._calls(archive.copy_artifacts, container_id, wanted.size, artifacts)
        except containers.DockerFailure as failure:
            log.warning("container %s: artifacts not copied: %s", container_id[:12], failure)
            artifacts.give(None)

    async def _finish(
        self,
        container_id: str,
        spec: JobSpec,
        since: float,
        followed: Replayed | None,
        emit: Counting,
        artifacts: Handover,
    ) -> tuple[containers.ExitInfo | None, WorkerOutput | None]:
        """How the worker ended and what it left; None for a timeout (then killed).
        Its output goes to `emit` as it comes, until then, its artifacts to `artifacts`.
        Neither its frame nor the copy of /bundle/out is read past the output cap."""
        cap = protocol.output_cap(spec.output_limit)
        deadline = since + float(spec.timeout_seconds)
        while followed is None or (followed.finished and not followed.done):
            if followed is not None and not await self._still_running(container_id, deadline):
                break  # the worker's container stopped: what it left is all there is
            left = deadline - time.time()
            if left <= 0:
                followed = Replayed(False, False, None)
                break
            kept = protocol.artifact_cap(spec.artifact_limit)
            followed = await self._calls(
                reattach.follow_log, container_id, left, Skipping(emit, emit.passed), cap, kept,
                artifacts,
            )  # fmt: skip
        if not followed.finished:
            await self._calls(containers.kill, container_id)
            return None, await self._calls(archive.collect_output, container_id, cap)
        if followed.output is not None:
            output = bundle.read_output(followed.output) if followed.output else None
            if _engine_succeeded(output):
                return CLEAN_EXIT, output
            ended = await self._calls(containers.exit_info_since, container_id, since)
            return ended, output
        # No frame (the worker died first): copy what it left. Both read a still-running
        # container, side by side.
        return await asyncio.gather(
            self._calls(containers.exit_info_since, container_id, since),
            self._calls(archive.collect_output, container_id, cap),
        )

    async def _still_running(self, container_id: str, deadline: float) -> bool:
        """Whether the container is up, waiting (until `deadline`) for a Docker daemon
        that does not answer: one restarting with live-restore leaves it running."""
        while True:
            try:
                return await self._calls(reattach.container_running, container_id)
            except containers.DockerFailure:
                if time.time() >= deadline:
                    raise
                log.warning("container %s: Docker does not answer; waiting", container_id[:12])
                await asyncio.sleep(DOCKER_RETRY)

    def _discard_soon(self, slot: Slot) -> None:
        """Discard in the background: the outcome need not wait for the removal, but
        close() does, so no discard is ever lost."""
        task = asyncio.create_task(self._discard(slot), name=f"discard-{slot.slot_id}")
        self._discards.add(task)
        task.add_done_callback(self._discards.discard)

    async def _discard(self, slot: Slot) -> None:
        try:
            await self._slots.retire(slot)
        except Exception:
            # The pool's reconcile removes what a failed discard leaves behind.
            log.exception("slot %s: discard failed; reconcile will remove it", slot.slot_id)

    async def health(self) -> RunnerHealth:
        docker = await self._probe(ping_client, HEALTH_TIMEOUT)
        if self._host is None:
            return RunnerHealth(docker=docker)
        # Each part's probe looks its container up, then asks it over HTTP.
        bound = 4 * HEALTH_TIMEOUT + 0.5
        try:
            found = await asyncio.wait_for(self._calls(self._host.probes), bound)
        except TimeoutError:
            late = Probe(False, f"no answer within {bound:g}s")
            found = {part: late for part in self._host.parts}
        return RunnerHealth(docker=docker, gateway=found.get("gateway"), egress=found.get("egress"))

    async def _probe(self, check: Callable[[Any], Probe], bound: float) -> Probe:
        try:
            return await asyncio.wait_for(self._calls(check), bound)
        except TimeoutError:
            return Probe(False, f"no answer within {bound:g}s")

    async def close(self) -> None:
        while self._discards:
            await asyncio.gather(*self._discards, return_exceptions=True)
        await _close_slots(self._slots)
        await self._calls.close()


def _emitter(output: Output) -> containers.Emit:
    """`output.write` for Docker threads: each piece is handed to the event loop in order,
    ahead of the follow call's own completion, so all of it is written before the run ends."""
    loop = asyncio.get_running_loop()

    def emit(stream: str, data: bytes) -> None:
        # A run cut short may leave its reading thread a moment past the loop's end.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(output.write, cast(OutputStream, stream), data)

    return emit


async def _close_slots(slots: SlotSource) -> None:
    if isinstance(slots, WarmPool):
        await slots.stop()


class Host(Protocol):
    """What the runner's Docker host needs besides workers: the gateway container and the
    egress proxy's. The wiring passes it in (tower/runners.py); execution knows nothing
    of either."""

    @property
    def parts(self) -> tuple[str, ...]:
        """The names of what it runs, as /health reports them ("gateway", "egress")."""
        ...

    async def setup(self, calls: DockerCalls) -> None:
        """Make them run, through the runner's Docker calls once Docker answers; reports,
        never raises."""
        ...

    def probes(self, client: Any) -> Mapping[str, Probe]:
        """Does each answer, by part? Blocking, on one of the runner's Docker threads."""
        ...
