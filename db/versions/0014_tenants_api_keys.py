"""tenants and their API keys (stored as SHA-256 hashes)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 09:00:00.000000

The 'default' tenant is created here: the bootstrap key (TOWER_API_KEY) is its admin.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import DOUBLE_PRECISION

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def _timestamps() -> list[sa.Column[object]]:
    return [
        sa.Column(
            name,
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        )
        for name in ("created_at", "updated_at")
    ]


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("max_running", sa.Integer(), nullable=True),
        sa.Column("submits_per_minute", sa.Integer(), nullable=True),
        sa.Column("spend_per_day_usd", DOUBLE_PRECISION(), nullable=True),
        sa.Column("spend_per_month_usd", DOUBLE_PRECISION(), nullable=True),
        sa.Column("max_queued", sa.Integer(), nullable=True),
        sa.Column("share", DOUBLE_PRECISION(), nullable=True),
        *_timestamps(),
        sa.PrimaryKeyConstraint("name"),
    )
    op.execute("INSERT INTO tenants (name) VALUES ('default')")
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.Text(), nullable=False),
        sa.Column("key_sha256", sa.Text(), nullable=False),
        sa.Column("tenant", sa.Text(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("hint", sa.Text(), nullable=False),
        _timestamps()[0],
        sa.CheckConstraint(
            "role IN ('admin', 'operator', 'submit', 'read')", name="api_keys_role_valid"
        ),
        sa.ForeignKeyConstraint(["tenant"], ["tenants.name"], name="api_keys_tenant_fk"),
        sa.PrimaryKeyConstraint("key_id"),
    )
    op.create_index("api_keys_sha256", "api_keys", ["key_sha256"], unique=True)
    op.create_index("api_keys_tenant_name", "api_keys", ["tenant", "name"], unique=True)


def downgrade() -> None:
    op.drop_table("api_keys")
    op.drop_table("tenants")
