"""A job's statuses: the words every layer uses for where a job is in its life.

docs/architecture.md draws the state machine; tower/db/lifecycle.py holds the only
statements that move a job from one status to another.
"""

from __future__ import annotations

from typing import Final, Literal

PENDING: Final = "pending"
RUNNING: Final = "running"
COMPLETED: Final = "completed"
FAILED: Final = "failed"
CANCELLED: Final = "cancelled"

JobStatus = Literal["pending", "running", "completed", "failed", "cancelled"]

JOB_STATUSES: tuple[JobStatus, ...] = (PENDING, RUNNING, COMPLETED, FAILED, CANCELLED)
# Final: no statement matches a job in one of these.
TERMINAL_STATUSES: tuple[JobStatus, ...] = (COMPLETED, FAILED, CANCELLED)


def sql_list(statuses: tuple[str, ...]) -> str:
    """The statuses as an SQL list, e.g. "('completed', 'failed', 'cancelled')"."""
    return "(" + ", ".join(f"'{status}'" for status in statuses) + ")"


TERMINAL_SQL = sql_list(TERMINAL_STATUSES)
