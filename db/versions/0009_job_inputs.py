"""job_inputs: the uploads a job unpacks into its workspace

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 07:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_inputs",
        sa.Column("job_id", sa.Text(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("upload_id", sa.Text(), nullable=True),
        sa.Column("path", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.job_id"], name="job_inputs_job_fk", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["upload_id"],
            ["uploads.upload_id"],
            name="job_inputs_upload_fk",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("job_id", "position"),
    )
    op.create_index("job_inputs_upload", "job_inputs", ["upload_id"])


def downgrade() -> None:
    op.drop_index("job_inputs_upload", table_name="job_inputs")
    op.drop_table("job_inputs")
