"""The Docker runner of a replica, kept for as long as it runs, whatever its daemon does.

A tower may start before dockerd, or see it stop and start again. While the daemon does
not answer, or the worker image is missing, the runner says why (`unavailable()`: the
dispatcher reads it before each claim, /health reports it), so nothing is claimed only
to fail. A watch loop checks every WATCH_INTERVAL: it connects, then sets the runner up
(gateway, warm pool) once Docker first answers; it marks the runner down when a check
fails and up when one passes again, and then wakes the dispatcher. The Docker client
needs no replacing after a daemon restart: each call opens its own connection to the
socket when the pooled one is gone.

A job whose run failed while the daemon was away, or whose image vanished, comes back
as `requeue`: the dispatcher gives it back to the queue, its attempt not counted
(lifecycle.REQUEUE). Jobs that fail with Docker answering fail as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tower.configs.models import DEFAULT_PROFILE
from tower.configs.store import ConfigStore
from tower.db.pool import Pool
from tower.errors import TowerError
from tower.execution.adoption import Adoption
from tower.execution.docker import containers, hardening
from tower.execution.docker.client import DockerCalls
from tower.execution.docker.network import retire_worker_network
from tower.execution.docker.probe import ping_client
from tower.execution.docker_runner import DockerRunner, Host
from tower.execution.pool.warm import WarmPool
from tower.execution.runner import ClaimedJob, Output, Probe, RunnerHealth, RunOutcome
from tower.observability.metrics import TowerMetrics
from tower.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

WATCH_INTERVAL = 1.0  # seconds between checks of the daemon
CHECK_TIMEOUT = 5.0  # a daemon that takes longer to answer a ping is down for us
LATE = f"no answer within {CHECK_TIMEOUT:g}s"
NOT_YET = "Docker has not answered yet"
DOWN_HINT = "; claiming no job until it does (scripts/setup-docker starts it)"


class WatchedRunner:
    """A Runner and a Gated runner (tower/execution/runner.py) over Docker."""

    def __init__(
        self,
        settings: Settings,
        pool: Pool,
        configs: ConfigStore,
        metrics: TowerMetrics,
        host: Host | None = None,
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._configs = configs
        self._metrics = metrics
        self._host = host
        self._calls: DockerCalls | None = None
        self._inner: DockerRunner | None = None
        self._down: str | None = NOT_YET
        self._wakes: list[Callable[[], None]] = []
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def start(
        cls,
        settings: Settings,
        pool: Pool,
        configs: ConfigStore,
        metrics: TowerMetrics,
        host: Host | None = None,
    ) -> WatchedRunner:
        """A runner checked once (ready at once when Docker answers), its watch started."""
        runner = cls(settings, pool, configs, metrics, host)
        await runner.check_once()
        runner._task = asyncio.create_task(runner._watch(), name="docker-watch")
        return runner

    # --- Gated -----------------------------------------------------------------------

    def unavailable(self) -> str | None:
        return self._down

    def on_available(self, wake: Callable[[], None]) -> None:
        self._wakes.append(wake)

    # --- Runner ----------------------------------------------------------------------

    async def run(self, job: ClaimedJob, output: Output) -> RunOutcome:
        inner = self._inner
        if inner is None or self._down is not None:
            # Claimed just before the daemon was seen gone: not the job's fault.
            return _requeue(self._down or NOT_YET)
        outcome = await inner.run(job, output)
        if outcome.succeeded or outcome.failure_reason != "error":
            return outcome
        problem = await self._problem()
        if problem is None:
            return outcome  # Docker answers: the job's own failure
        self._set(problem)
        if outcome.artifacts is not None:
            outcome.artifacts.unlink(missing_ok=True)
        return _requeue(f"{problem} (the run: {outcome.error})")

    # --- Adopting (tower/execution/adoption.py): the inner runner's, while Docker answers

    async def docker_host(self) -> str | None:
        inner = self._inner
        return None if inner is None or self._down is not None else await inner.docker_host()

    async def container_running(self, container_id: str) -> bool:
        if self._inner is None:
            raise TowerError(self._down or NOT_YET)
        return await self._inner.container_running(container_id)

    async def resume(self, adopted: Adoption, output: Output) -> RunOutcome:
        if self._inner is None:
            return _requeue(self._down or NOT_YET)
        return await self._inner.resume(adopted, output)

    async def health(self) -> RunnerHealth:
        if self._inner is None:
            down = Probe(False, (self._down or NOT_YET) + DOWN_HINT)
            return RunnerHealth(docker=down, gateway=Probe(False, "not checked: Docker is down"))
        held = await self._inner.health()
        if held.docker is not None and not held.docker.ok:
            why = f"Docker does not answer ({held.docker.detail})"
            self._set(why)  # seen here first: claim nothing from now on, as /health says
            return dataclasses.replace(held, docker=Probe(False, why + DOWN_HINT))
        if self._down is not None:
            # It answers a ping, but something else keeps jobs from running (the image).
            return dataclasses.replace(held, docker=Probe(False, self._down + DOWN_HINT))
        return held

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._inner is not None:
            await self._inner.close()  # closes the calls too
        elif self._calls is not None:
            await self._calls.close()

    # --- watching --------------------------------------------------------------------

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            try:
                await self.check_once()
            except Exception:
                # A bug in one round must not end the watch for the replica's lifetime.
                log.exception("docker watch: check failed")

    async def check_once(self) -> None:
        """Check the daemon now (connecting and setting up first if never done)."""
        was_down = self._down is not None
        problem = await self._problem()
        if problem is None and self._inner is None:
            problem = await self._set_up()
        elif problem is None and was_down and self._host is not None and self._calls:
            # Back after an outage: the gateway may have gone with the daemon.
            await self._host.setup(self._calls)
        self._set(problem)

    async def _problem(self) -> str | None:
        """Why jobs cannot run on this daemon now, or None."""
        if self._calls is None:
            try:
                self._calls = await DockerCalls.open(int(self._settings.max_concurrent_jobs))
            except TowerError as problem:
                return problem.message
        calls = self._calls
        ping = await _bounded(calls(ping_client))
        if ping is None or not ping.ok:
            return f"Docker does not answer ({ping.detail if ping else LATE})"
        try:
            image = await _bounded(calls(containers.image_id, self._settings.worker_image))
        except TowerError as problem:
            return problem.message
        return None if image is not None else f"Docker does not answer ({LATE})"

    async def _set_up(self) -> str | None:
        """The gateway, the bridge of old versions retired, the warm pool, the runner."""
        calls = self._calls
        assert calls is not None
        try:
            if self._host is not None:
                await self._host.setup(calls)
            await calls(retire_worker_network, self._settings.worker_net)
            image = await calls(containers.image_id, self._settings.worker_image)
            profile = self._configs.profile(DEFAULT_PROFILE)
            shape = hardening.pool_shape(profile, self._settings, image)
            slots = await WarmPool.start(self._settings, self._pool, calls, shape, self._metrics)
        except TowerError as problem:
            return problem.message
        self._inner = DockerRunner(
            self._settings, self._configs, calls, slots, self._metrics, self._host, self._pool
        )
        return None

    def _set(self, problem: str | None) -> None:
        before, self._down = self._down, problem
        if problem is not None and before != problem:
            log.error("Docker unavailable: %s%s", problem, DOWN_HINT)
        if problem is None and before is not None:
            if before != NOT_YET:
                log.warning("Docker answers again: claiming jobs")
            for wake in self._wakes:
                wake()


def _requeue(why: str) -> RunOutcome:
    return RunOutcome(False, error=why, failure_reason="error", requeue=True)


async def _bounded(call: Awaitable[T]) -> T | None:
    """The call's answer, or None when the daemon takes longer than CHECK_TIMEOUT."""
    try:
        return await asyncio.wait_for(call, CHECK_TIMEOUT)
    except TimeoutError:
        return None
