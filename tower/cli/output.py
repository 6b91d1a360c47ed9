"""How `parpaing` speaks: progress as `parpaing: ...` lines on stdout, a failure as one
`parpaing: ...` line on stderr and a non-zero exit (never a traceback)."""

from __future__ import annotations

import sys

PREFIX = "parpaing: "


class CliError(Exception):
    """A failure to report on one line, then exit non-zero."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def say(message: str) -> None:
    # Flushed: serve's progress must show before the server takes over the process.
    print(f"{PREFIX}{message}", flush=True)


def report_failure(error: CliError) -> int:
    """Print the failure on stderr; the exit code of a command that failed."""
    print(f"{PREFIX}{error}", file=sys.stderr)
    return 1
