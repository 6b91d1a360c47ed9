"""egress: what each job's requests through the egress proxy added up to; egress events

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 12:00:00.000000

A job whose allow-list lets it through the egress proxy (docs/egress.md) gets a row at
its first request: requests open now, bytes in total, how many were allowed, the hosts
refused (and why) and the bound that stopped it, if one did. Every decision is also a
job event, of the new kind 'egress'.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

KINDS_BEFORE = "kind IN ('state', 'log')"
KINDS_AFTER = "kind IN ('state', 'log', 'egress')"


def upgrade() -> None:
    op.create_table(
        "job_egress",
        sa.Column("job_id", sa.Text(), nullable=False),
        sa.Column("open_requests", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("bytes", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("allowed", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("refused", JSONB(), server_default=sa.text("'[]'::jsonb"), nullable=False),
        sa.Column("refused_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("limited", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.job_id"], name="job_egress_job_fk", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("job_id"),
    )
    op.drop_constraint("job_events_kind_valid", "job_events", type_="check")
    op.create_check_constraint("job_events_kind_valid", "job_events", KINDS_AFTER)


def downgrade() -> None:
    op.execute("DELETE FROM job_events WHERE kind = 'egress'")
    op.drop_constraint("job_events_kind_valid", "job_events", type_="check")
    op.create_check_constraint("job_events_kind_valid", "job_events", KINDS_BEFORE)
    op.drop_table("job_egress")
