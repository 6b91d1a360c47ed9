"""The schema as SQLAlchemy Core metadata: Alembic compares migrations against it.

Queries are written in SQL in each domain's queries.py; these tables are the
single description of the columns those queries rely on.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, DOUBLE_PRECISION, JSONB, UUID

from tower.db.statuses import JOB_STATUSES, sql_list

metadata = MetaData()

CONFIG_KINDS = ("profile", "engine", "template")

NOW = text("now()")


def _job_id(table: str, *, primary_key: bool = False) -> Column[str]:
    """A row's job, deleted with it (retention deletes jobs, not their rows one by one)."""
    job = ForeignKey("jobs.job_id", ondelete="CASCADE", name=f"{table}_job_fk")
    return Column("job_id", Text, job, primary_key=primary_key, nullable=False)


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
    # The replica that claimed the latest attempt. Unlike lease_owner it outlives the
    # lease, so a finished job still says which tower ran it.
    Column("ran_by", Text),
    Column("lease_token", UUID(as_uuid=True)),
    Column("lease_until", DateTime(timezone=True)),
    Column("exit_code", Integer),
    Column("result", Text),
    Column("error", Text),
    Column("failure_reason", Text),
    Column("usage", JSONB),
    Column("duration_ms", BigInteger),
    # SHA-256 (hex) of the job's gateway token, set when an attempt starts: the gateway's
    # auth check looks a token up by this, and only a running job's token passes.
    Column("gateway_token_sha256", Text),
    # The last job_events.seq handed out for this job. Every event bumps it in the same
    # statement that writes the event, so the row lock orders a job's events.
    Column("event_seq", BigInteger, nullable=False, server_default=text("0")),
    # What the last attempt left in its workspace, beyond the files (tower/artifacts):
    # {files, bytes, omitted, omitted_count, deleted, deleted_count, changes, diff_error}.
    Column("artifacts", JSONB),
    # A repository job's output, as tower did it (tower/workspaces/outputs.py):
    # {branch, commit, pull_request_url, pull_request_number}, or why nothing was pushed.
    Column("published", JSONB),
    # Its session (docs/sessions.md): the first turn's job id, the job it continues, and
    # its turn (1 for a job nobody continued from); NULL for a job before sessions.
    Column("session_id", Text),
    Column("parent_job_id", Text),
    Column("turn", Integer),
    # Its tenant (docs/tenants.md): only keys of that tenant, or of every tenant, see it.
    Column("tenant", Text, nullable=False, server_default=text("'default'")),
    # The name of the key that submitted it (never the key): who did what.
    Column("submitted_by", Text),
    CheckConstraint(
        f"status IN {sql_list(JOB_STATUSES)}",
        name="jobs_status_valid",
    ),
    # The claim walks this partial index, one tenant at a time, in priority order.
    Index(
        "jobs_claimable_tenant",
        "tenant",
        text("priority DESC"),
        "created_at",
        postgresql_where=text("status = 'pending'"),
    ),
    # The claim counts each tenant's running jobs (fair shares, running quotas).
    Index("jobs_running_tenant", "tenant", postgresql_where=text("status = 'running'")),
    # The reaper looks only at running jobs whose lease has passed.
    Index("jobs_running_lease", "lease_until", postgresql_where=text("status = 'running'")),
    Index("jobs_created", text("created_at DESC")),
    Index("jobs_tenant_created", "tenant", text("created_at DESC")),
    Index("jobs_status_created", "status", text("created_at DESC")),
    Index("jobs_agent_created", "agent_id", text("created_at DESC")),
    Index("jobs_session", "session_id", "turn", postgresql_where=text("session_id IS NOT NULL")),
    Index(
        "jobs_gateway_token",
        "gateway_token_sha256",
        unique=True,
        postgresql_where=text("gateway_token_sha256 IS NOT NULL"),
    ),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    # A key is its tenant's: two tenants using the same one get a job each.
    Column("tenant", Text, primary_key=True, server_default=text("'default'")),
    Column("key", Text, primary_key=True),
    Column("request_hash", Text, nullable=False),
    _job_id("idempotency_keys"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Index("idempotency_keys_created", "created_at"),
)

configs = Table(
    "configs",
    metadata,
    Column("kind", Text, primary_key=True),
    Column("name", Text, primary_key=True),
    Column("content", Text, nullable=False),
    # The shipped file this row was last seeded from. While `content` equals it, no
    # operator has edited the row, so a newer shipped version may replace it at start.
    Column("shipped_content", Text),
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

EVENT_KINDS = ("state", "log")

# Append-only: a job's state changes and log chunks, numbered per job by seq (from
# jobs.event_seq). `id` orders every job's events together, for the all-jobs stream.
job_events = Table(
    "job_events",
    metadata,
    Column("id", BigInteger, Identity(always=True), nullable=False, unique=True),
    _job_id("job_events", primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("kind", Text, nullable=False),
    Column("data", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    # 'egress': a decision of the egress proxy (tower/egress), written as it is made.
    CheckConstraint("kind IN ('state', 'log', 'egress')", name="job_events_kind_valid"),
    Index("job_events_states", "id", postgresql_where=text("kind = 'state'")),
)

# What a job's requests through the egress proxy added up to (tower/egress): a row from
# its first request on. `open_serials` holds the serials of those allowed and not yet ended
# (their number bounded by EGRESS_MAX_CONNECTIONS; a serial is `allowed` when its request
# was let go, signed into the tag that reports its end: tower/egress/tags.py), let through
# by the proxy instance `proxy_instance` (a question from another closes them: that
# instance ended, and they with it), `bytes` what ended ones moved (bounded by
# EGRESS_MAX_BYTES);
# `refused` lists distinct refused hosts with the reason (at most 50; refused_count counts
# all), `limited` says which bound refused the job, once one did.
job_egress = Table(
    "job_egress",
    metadata,
    _job_id("job_egress", primary_key=True),
    Column("open_serials", ARRAY(Integer), nullable=False, server_default=text("'{}'::integer[]")),
    Column("bytes", BigInteger, nullable=False, server_default=text("0")),
    Column("allowed", Integer, nullable=False, server_default=text("0")),
    Column("refused", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("refused_count", Integer, nullable=False, server_default=text("0")),
    Column("limited", Text),
    Column("proxy_instance", Text),
)

DELIVERY_STATUSES = ("pending", "delivered", "failed", "stopped")

# The webhook outbox: one row per terminal state of a job that has a webhook_url, written
# in the same transaction as that state. Any replica delivers a due row, holding it by
# locked_until so a replica that dies mid-delivery hands it on.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("delivery_id", Text, primary_key=True),
    _job_id("webhook_deliveries"),
    Column("event_type", Text, nullable=False),
    Column("url", Text, nullable=False),
    Column("payload", JSONB, nullable=False),
    Column("status", Text, nullable=False, server_default=text("'pending'")),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("locked_until", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("delivered_at", DateTime(timezone=True)),
    CheckConstraint(
        "status IN ('pending', 'delivered', 'failed', 'stopped')",
        name="webhook_deliveries_status_valid",
    ),
    Index("webhook_deliveries_due", "next_attempt_at", postgresql_where=text("status = 'pending'")),
    Index("webhook_deliveries_job", "job_id"),
)

# One row per HTTP attempt of a delivery: what the job's record shows as its history.
webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column(
        "delivery_id",
        Text,
        ForeignKey(
            "webhook_deliveries.delivery_id",
            ondelete="CASCADE",
            name="webhook_attempts_delivery_fk",
        ),
        primary_key=True,
    ),
    Column("attempt", Integer, primary_key=True),
    Column("attempted_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("status_code", Integer),
    Column("error", Text),
    Column("duration_ms", Integer, nullable=False),
)

# Secrets tower makes for itself when the operator gave none (the webhook signing key),
# shared by every replica: the first to start inserts, the others read the same row.
tower_secrets = Table(
    "tower_secrets",
    metadata,
    Column("name", Text, primary_key=True),
    Column("value", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
)

# Named secrets for clones, pushes and forge APIs. `sealed` is AES-GCM under SECRETS_KEY
# (which never reaches the database); `key_id` names that key, so a changed key is
# reported as such.
credentials = Table(
    "credentials",
    metadata,
    # Names are per tenant; a job's repository uses its own tenant's credential.
    Column("tenant", Text, primary_key=True, server_default=text("'default'")),
    Column("name", Text, primary_key=True),
    Column("kind", Text, nullable=False),
    Column("username", Text),
    Column("api_url", Text),
    Column("sealed", LargeBinary, nullable=False),
    Column("key_id", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    CheckConstraint("kind IN ('git', 'github', 'gitlab')", name="credentials_kind_valid"),
)

# Files and archives for jobs' workspaces, checked before they are kept (tower/uploads).
uploads = Table(
    "uploads",
    metadata,
    Column("upload_id", Text, primary_key=True),
    Column("tenant", Text, nullable=False, server_default=text("'default'")),
    Column("kind", Text, nullable=False),
    Column("filename", Text),
    Column("size", BigInteger, nullable=False),
    Column("sha256", Text, nullable=False),
    Column("entries", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("kind IN ('file', 'tar', 'tar.gz', 'zip')", name="uploads_kind_valid"),
    Index("uploads_expires_at", "expires_at"),
)

# An upload's bytes in order, in rows of tower/db/chunks.py, deleted with it: by a
# trigger on each DELETE of uploads (migration 0021), not a foreign key, which checked
# its parent once per row written.
upload_chunks = Table(
    "upload_chunks",
    metadata,
    Column("upload_id", Text, primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("data", LargeBinary, nullable=False),
)

# The uploads a job unpacks into its workspace, in the request's order. An upload's
# deletion (DELETE /uploads, or retention once no live job uses it) empties `upload_id`
# rather than the row: the job then fails at staging, saying which input went missing.
job_inputs = Table(
    "job_inputs",
    metadata,
    _job_id("job_inputs", primary_key=True),
    Column("position", Integer, primary_key=True),
    Column(
        "upload_id",
        Text,
        ForeignKey("uploads.upload_id", ondelete="SET NULL", name="job_inputs_upload_fk"),
    ),
    Column("path", Text, nullable=False),
    # Retention asks "does a live job use this upload?" by upload.
    Index("job_inputs_upload", "upload_id"),
)

# What a job created or changed in its workspace (tower/artifacts): its files and, for a
# repository job, its diff. An attempt that stores them replaces the last one's; they go
# with their job.
job_artifacts = Table(
    "job_artifacts",
    metadata,
    Column("artifact_id", BigInteger, Identity(always=True), primary_key=True),
    _job_id("job_artifacts"),
    Column("kind", Text, nullable=False),
    Column("path", Text, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("mode", Integer, nullable=False),
    Column("sha256", Text, nullable=False),
    Column("attempt", Integer, nullable=False),
    # 'session': the captured workspace and engine state a continue starts from.
    CheckConstraint("kind IN ('file', 'diff', 'session')", name="job_artifacts_kind_valid"),
    Index("job_artifacts_path", "job_id", "kind", "path", unique=True),
)

# An artifact's bytes in order, in rows of tower/db/chunks.py, deleted with it (as
# upload_chunks: by a trigger on each DELETE of job_artifacts, migration 0021).
job_artifact_chunks = Table(
    "job_artifact_chunks",
    metadata,
    Column("artifact_id", BigInteger, primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("data", LargeBinary, nullable=False),
)

KEY_ROLES = ("admin", "operator", "submit", "read")

# Tenants (docs/tenants.md): who owns jobs, uploads and credentials, and their quotas.
# A quota column holds NULL for the deployment's default (TENANT_* settings), 0 for no
# limit. The 'default' tenant always exists: the bootstrap key's, and older rows'.
tenants = Table(
    "tenants",
    metadata,
    Column("name", Text, primary_key=True),
    Column("max_running", Integer),
    Column("submits_per_minute", Integer),
    Column("spend_per_day_usd", DOUBLE_PRECISION),
    Column("spend_per_month_usd", DOUBLE_PRECISION),
    Column("max_queued", Integer),
    Column("share", DOUBLE_PRECISION),
    # The claim's own (lifecycle.CLAIM, tenants with a running quota): the transaction of
    # the last claim that started jobs of the tenant, and how many it left running at most.
    Column("claimed_xact", BigInteger),
    Column("claimed_running", Integer, nullable=False, server_default=text("0")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=NOW),
)

# A tenant's submits in the current minute (SUBMITS_PER_MINUTE): the row submits of a
# tenant with quotas lock, one after another, so the count is exact.
tenant_rates = Table(
    "tenant_rates",
    metadata,
    Column("tenant", Text, primary_key=True),
    Column("window_start", DateTime(timezone=True), nullable=False),
    Column("submits", Integer, nullable=False),
)

# What the jobs retention deleted had used, per tenant and UTC day of submission: spend
# quotas and the usage view add it to the jobs still kept.
tenant_usage = Table(
    "tenant_usage",
    metadata,
    Column("tenant", Text, primary_key=True),
    Column("day", Date, primary_key=True),
    Column("jobs", BigInteger, nullable=False),
    Column("input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("cost_usd", DOUBLE_PRECISION, nullable=False),
)

# API keys: only the SHA-256 of each (a 256-bit random key needs no salt) is kept; the key
# itself is shown once, when it is made. `hint` is its first characters, to tell keys apart.
api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", Text, primary_key=True),
    Column("key_sha256", Text, nullable=False),
    Column(
        "tenant",
        Text,
        ForeignKey("tenants.name", name="api_keys_tenant_fk"),
        nullable=False,
    ),
    Column("role", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("hint", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    CheckConstraint("role IN ('admin', 'operator', 'submit', 'read')", name="api_keys_role_valid"),
    Index("api_keys_sha256", "key_sha256", unique=True),
    Index("api_keys_tenant_name", "tenant", "name", unique=True),
)
