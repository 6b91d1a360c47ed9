"""tenant quotas and fair scheduling: the claim walks pending jobs per tenant and counts
running ones per tenant; a running quota's bookkeeping; submits per minute; the usage of
jobs retention deleted

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 13:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import DOUBLE_PRECISION

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "jobs_claimable_tenant",
        "jobs",
        ["tenant", sa.text("priority DESC"), "created_at"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "jobs_running_tenant",
        "jobs",
        ["tenant"],
        postgresql_where=sa.text("status = 'running'"),
    )
    op.drop_index("jobs_claimable", table_name="jobs")
    op.add_column("tenants", sa.Column("claimed_xact", sa.BigInteger(), nullable=True))
    op.add_column(
        "tenants",
        sa.Column("claimed_running", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    op.create_table(
        "tenant_rates",
        sa.Column("tenant", sa.Text(), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("submits", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("tenant"),
    )
    op.create_table(
        "tenant_usage",
        sa.Column("tenant", sa.Text(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("jobs", sa.BigInteger(), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost_usd", DOUBLE_PRECISION(), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "day"),
    )


def downgrade() -> None:
    op.drop_table("tenant_usage")
    op.drop_table("tenant_rates")
    op.drop_column("tenants", "claimed_running")
    op.drop_column("tenants", "claimed_xact")
    op.create_index(
        "jobs_claimable",
        "jobs",
        [sa.text("priority DESC"), "created_at"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.drop_index("jobs_running_tenant", table_name="jobs")
    op.drop_index("jobs_claimable_tenant", table_name="jobs")
