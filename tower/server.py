"""The HTTP server around the app, with a shutdown that loses no job.

On SIGTERM (or Ctrl-C) uvicorn first closes its listeners and waits for open requests,
and only then runs the app's lifespan shutdown. Claiming must stop before that wait,
not after it, so the signal also drains the dispatcher at once (tower.app.begin_shutdown).
Long polls end at once with a 503 (they watch TowerState.stopping); other open requests
get HTTP_DRAIN_SECONDS, as event streams would otherwise hold the shutdown for as long as
their clients like; their clients reconnect (to another replica, behind a load balancer).
A second signal ends the running jobs' grace: they are handed back at once, and the
process exits as soon as that is done.
"""

from __future__ import annotations

import logging
import socket
import sys
from types import FrameType

import uvicorn
from fastapi import FastAPI

from tower.app import begin_shutdown, hurry_shutdown

HTTP_DRAIN_SECONDS = 5


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self._app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit:
            hurry_shutdown(self._app)  # asked again: no grace for the running jobs
        else:
            begin_shutdown(self._app)
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await super().shutdown(sockets)
        if self.force_exit:
            # A second Ctrl-C makes uvicorn skip the lifespan's shutdown; tower's hands
            # the running jobs back and removes their containers, so it must still run.
            await self.lifespan.shutdown()


def log_to_stderr() -> None:
    """Tower's own INFO lines (claims handed back, draining, reaping) next to uvicorn's:
    an operator reading `docker logs` needs them to follow a restart."""
    logger = logging.getLogger("tower")
    if logger.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s:  %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def run_server(app: FastAPI, host: str, port: int) -> None:
    log_to_stderr()
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="info",
        # uvloop and httptools: the event loop and HTTP parser in C, as production runs.
        loop="uvloop",
        http="httptools",
        timeout_graceful_shutdown=HTTP_DRAIN_SECONDS,
    )
    DrainingServer(config, app).run()
