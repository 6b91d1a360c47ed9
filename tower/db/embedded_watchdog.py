"""Brings the embedded PostgreSQL back when its server process dies.

Without it a killed (or OOM-killed) embedded server left the tower answering 503 for
ever. A thread waits on the server process (a pidfd: woken by its exit, no polling),
starts it again on the same port a bounded number of times, and gives up loudly so the
caller can exit non-zero and let its own supervisor take over.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
from types import TracebackType

from tower.db.embedded import LocalPostgres

log = logging.getLogger(__name__)

ATTEMPTS = 5
FIRST_PAUSE = 0.5  # seconds; doubled after each failed attempt
# A server that dies sooner than this after a restart has not really come back: its next
# restart counts against the same budget, so a crash loop ends instead of spinning.
STABLE_AFTER = 60.0


class Watchdog:
    def __init__(self, server: LocalPostgres, attempts: int = ATTEMPTS) -> None:
        self.server = server
        self.attempts = attempts
        self.gave_up = False
        self.restarts = 0
        self._used = 0  # attempts spent since the server last stayed up
        self._restarted_at = -STABLE_AFTER
        self._stop_read, self._stop_write = os.pipe()
        self._thread = threading.Thread(target=self._watch, name="postgres-watchdog", daemon=True)

    def __enter__(self) -> Watchdog:
        self._thread.start()
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        os.write(self._stop_write, b"x")
        self._thread.join()
        os.close(self._stop_read)
        os.close(self._stop_write)

    def _watch(self) -> None:
        while self._wait_for_death():
            if not self._bring_back():
                self.gave_up = True
                log.error(
                    "embedded PostgreSQL in %s did not come back after %d attempts; "
                    "stopping the tower (see %s)",
                    self.server.datadir,
                    self.attempts,
                    self.server.datadir / "server.log",
                )
                os.kill(os.getpid(), 15)  # SIGTERM: a graceful stop, then a failing exit
                return

    def _wait_for_death(self) -> bool:
        """True when the server died, False when asked to stop watching."""
        pid = self.server.postmaster_pid()
        if pid is None:
            return not self._stopping(0)
        try:
            process = os.pidfd_open(pid)
        except ProcessLookupError:
            return not self._stopping(0)
        try:
            ready, _, _ = select.select([process, self._stop_read], [], [])
        finally:
            os.close(process)
        if self._stop_read in ready:
            return False
        log.error("embedded PostgreSQL (pid %d) died; restarting it", pid)
        return True

    def _bring_back(self) -> bool:
        if time.monotonic() - self._restarted_at >= STABLE_AFTER:
            self._used = 0
        pause = FIRST_PAUSE * 2**self._used
        while self._used < self.attempts:
            self._used += 1
            try:
                self.server.start()
            except (OSError, RuntimeError) as exc:
                log.error(
                    "embedded PostgreSQL restart %d/%d failed: %s", self._used, self.attempts, exc
                )
                if self._stopping(pause):
                    return True  # shutting down anyway
                pause *= 2
                continue
            self.restarts += 1
            self._restarted_at = time.monotonic()
            log.warning(
                "embedded PostgreSQL restarted (attempt %d/%d), pid %s, port %d",
                self._used,
                self.attempts,
                self.server.postmaster_pid(),
                self.server.port,
            )
            return True
        return False

    def _stopping(self, timeout: float) -> bool:
        ready, _, _ = select.select([self._stop_read], [], [], timeout)
        return bool(ready)
