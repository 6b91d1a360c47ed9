"""The schema as SQLAlchemy Core metadata: Alembic compares migrations against it.

Queries are written in SQL in each domain's queries.py; these tables are the
single description of the columns those queries rely on.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

metadata = MetaData()

JOB_STATUSES = ("pending", "running", "completed", "failed", "cancelled")
TERMINAL_STATUSES = ("completed", "failed", "cancelled")
CONFIG_KINDS = ("profile", "engine", "template")

NOW = text("now()")

jobs = Table(
    "jobs",
    metadata,
    Column("job_id", Text, primary_key=True),
    Column("agent_id", Text, nullable=False),
    Column("engine", Text, nullable=False),
    Column("profile", Text, nullable=False),
    Column("status", Text, nullable=False, server_default=text("'pending'")),
    Column("request", JSONB, nullable=False),
    Column("priority", Integer, nullable=False, server_default=text("0")),
    Column("attempt", Integer, nullable=False, server_default=text("0")),
    Column("max_attempts", Integer, nullable=False, server_default=text("1")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("run_after", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("lease_owner", Text),
    Column("lease_token", UUID(as_uuid=True)),
    Column("lease_until", DateTime(timezone=True)),
    Column("exit_code", Integer),
    Column("result", Text),
    Column("error", Text),
    Column("failure_reason", Text),
    Column("usage", JSONB),
    Column("duration_ms", BigInteger),
    CheckConstraint(
        "status IN ('pending', 'running', 'completed', 'failed', 'cancelled')",
        name="jobs_status_valid",
    ),
    # The claim query walks this partial index in priority order and nothing else.
    Index(
        "jobs_claimable",
        text("priority DESC"),
        "created_at",
        postgresql_where=text("status = 'pending'"),
    ),
    # The reaper looks only at running jobs whose lease has passed.
    Index("jobs_running_lease", "lease_until", postgresql_where=text("status = 'running'")),
    Index("jobs_created", text("created_at DESC")),
    Index("jobs_status_created", "status", text("created_at DESC")),
    Index("jobs_agent_created", "agent_id", text("created_at DESC")),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("key", Text, primary_key=True),
    Column("request_hash", Text, nullable=False),
    Column(
        "job_id",
        Text,
        ForeignKey("jobs.job_id", ondelete="CASCADE", name="idempotency_keys_job_fk"),
        nullable=False,
    ),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Index("idempotency_keys_created", "created_at"),
)

configs = Table(
    "configs",
    metadata,
    Column("kind", Text, primary_key=True),
    Column("name", Text, primary_key=True),
    Column("content", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    CheckConstraint("kind IN ('profile', 'engine', 'template')", name="configs_kind_valid"),
)

POOL_STATUSES = ("starting", "ready", "busy")

# One row per worker container tower created, warm or cold, so that the reconcile loop
# can match containers and rows both ways. A row is reserved ('starting') before its
# container exists: that reservation is what keeps concurrent fills from overshooting.
pool_slots = Table(
    "pool_slots",
    metadata,
    Column("slot_id", Text, primary_key=True),
    Column("docker_host", Text, nullable=False),
    Column("image", Text, nullable=False),
    Column("config_hash", Text, nullable=False),
    Column("container_id", Text),
    Column("status", Text, nullable=False),
    Column("job_id", Text),
    Column("lease_token", UUID(as_uuid=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("ready_at", DateTime(timezone=True)),
    Column("acquired_at", DateTime(timezone=True)),
    CheckConstraint("status IN ('starting', 'ready', 'busy')", name="pool_slots_status_valid"),
    # Acquire walks the ready slots of one host and configuration, oldest first.
    Index(
        "pool_slots_ready",
        "docker_host",
        "image",
        "config_hash",
        "ready_at",
        postgresql_where=text("status = 'ready'"),
    ),
    Index("pool_slots_job", "job_id"),
)
