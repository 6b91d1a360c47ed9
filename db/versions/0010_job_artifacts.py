"""job_artifacts: what a job created or changed in its workspace, and its diff

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 08:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("artifacts", postgresql.JSONB(), nullable=True))
    op.create_table(
        "job_artifacts",
        sa.Column("artifact_id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("job_id", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("mode", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.Text(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.CheckConstraint("kind IN ('file', 'diff')", name="job_artifacts_kind_valid"),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.job_id"], name="job_artifacts_job_fk", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("artifact_id"),
    )
    op.create_index("job_artifacts_path", "job_artifacts", ["job_id", "kind", "path"], unique=True)
    op.create_table(
        "job_artifact_chunks",
        sa.Column("artifact_id", sa.BigInteger(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["artifact_id"],
            ["job_artifacts.artifact_id"],
            name="job_artifact_chunks_artifact_fk",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("artifact_id", "seq"),
    )


def downgrade() -> None:
    op.drop_table("job_artifact_chunks")
    op.drop_index("job_artifacts_path", table_name="job_artifacts")
    op.drop_table("job_artifacts")
    op.drop_column("jobs", "artifacts")
