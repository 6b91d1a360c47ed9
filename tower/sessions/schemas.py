"""The sessions API's answers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from tower.db.statuses import JobStatus


class Turn(BaseModel):
    job_id: str
    parent_job_id: str | None
    turn: int
    status: JobStatus
    created_at: datetime
    finished_at: datetime | None
    result: str | None = Field(description="the turn's result, cut to a preview")
    error: str | None
    failure_reason: str | None
    usage: dict[str, Any] | None


class Session(BaseModel):
    """A session's turns in order; two continues of one job are siblings (same turn)."""

    session_id: str
    turns: list[Turn]
