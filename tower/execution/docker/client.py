"""One Docker client per runner, and a way for async code to call the blocking SDK.

Calls run on the runner's own threads, not the loop's default executor: a job blocks a
thread in `wait` for as long as it runs, and with the default executor (a handful of
threads on a 2-core host) a few long jobs would starve every other `to_thread` user,
including the kill that cancellation needs at once.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Concatenate, ParamSpec, TypeVar

import docker
import requests
from docker.errors import DockerException

from tower.errors import one_line
from tower.execution.docker.containers import DockerFailure

P = ParamSpec("P")
T = TypeVar("T")

# Per blocking job: its wait; plus room for deliveries, kills, removals and pool fills.
SPARE_THREADS = 8
CONNECT_TIMEOUT = 10.0


class DockerUnreachable(DockerFailure):
    """The Docker daemon did not answer; jobs cannot run until it does."""


def connect(threads: int, timeout: float = CONNECT_TIMEOUT) -> docker.DockerClient:
    """A client for the daemon the Docker CLI would use, checked with a ping. Blocking."""
    try:
        # One pooled HTTP connection per thread, so concurrent calls never wait on each other.
        client = docker.from_env(timeout=int(timeout), max_pool_size=threads)
        # requests would read the proxy variables (and ~/.netrc) on every call, a scan of
        # the environment per Docker call; the daemon is reached directly, never by proxy.
        client.api.trust_env = False
        client.ping()
    except (DockerException, requests.RequestException) as exc:
        raise DockerUnreachable(f"Docker daemon unreachable: {one_line(exc)}") from exc
    return client


class DockerCalls:
    """Runs `fn(client, ...)` on dedicated threads and awaits the result."""

    def __init__(self, client: docker.DockerClient, threads: int) -> None:
        self.client = client
        self.threads = threads
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="docker")

    @classmethod
    async def open(cls, max_jobs: int) -> DockerCalls:
        threads = max_jobs + SPARE_THREADS
        client = await asyncio.to_thread(connect, threads)
        return cls(client, threads)

    async def __call__(
        self,
        fn: Callable[Concatenate[docker.DockerClient, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        loop = asyncio.get_running_loop()
        call = functools.partial(fn, self.client, *args, **kwargs)
        return await loop.run_in_executor(self._executor, call)

    async def close(self) -> None:
        """Drop queued calls and the client. Calls in flight are not awaited: the runner
        has already awaited its own, and a hung daemon must not hang shutdown."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.client.close()
