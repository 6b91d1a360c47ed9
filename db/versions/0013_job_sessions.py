"""sessions: a job's session, parent and turn; a turn's captured state as an artifact

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 15:40:00.000000

A continued job (POST /jobs/{id}/continue) starts from its parent's captured workspace
and engine state, stored like artifacts (job_artifacts kind 'session', in chunks).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

KINDS_BEFORE = "kind IN ('file', 'diff')"
KINDS_AFTER = "kind IN ('file', 'diff', 'session')"


def upgrade() -> None:
    op.add_column("jobs", sa.Column("session_id", sa.Text(), nullable=True))
    op.add_column("jobs", sa.Column("parent_job_id", sa.Text(), nullable=True))
    op.add_column("jobs", sa.Column("turn", sa.Integer(), nullable=True))
    op.create_index(
        "jobs_session",
        "jobs",
        ["session_id", "turn"],
        postgresql_where=sa.text("session_id IS NOT NULL"),
    )
    op.drop_constraint("job_artifacts_kind_valid", "job_artifacts", type_="check")
    op.create_check_constraint("job_artifacts_kind_valid", "job_artifacts", KINDS_AFTER)


def downgrade() -> None:
    op.execute("DELETE FROM job_artifacts WHERE kind = 'session'")
    op.drop_constraint("job_artifacts_kind_valid", "job_artifacts", type_="check")
    op.create_check_constraint("job_artifacts_kind_valid", "job_artifacts", KINDS_BEFORE)
    op.drop_index("jobs_session", table_name="jobs")
    op.drop_column("jobs", "turn")
    op.drop_column("jobs", "parent_job_id")
    op.drop_column("jobs", "session_id")
