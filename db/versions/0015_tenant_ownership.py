"""every job, upload, credential and idempotency key belongs to a tenant; a job names the
key that submitted it

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 10:00:00.000000

Existing rows become the 'default' tenant's (the bootstrap key's). Credential names and
idempotency keys are per tenant from now on: their primary keys take the tenant first.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

OWNED = ("jobs", "uploads", "credentials", "idempotency_keys")
# Table -> the primary key's other column, now after the tenant.
KEYED_BY_NAME = {"credentials": "name", "idempotency_keys": "key"}


def _tenant() -> sa.Column[str]:
    return sa.Column("tenant", sa.Text(), server_default=sa.text("'default'"), nullable=False)


def upgrade() -> None:
    for table in OWNED:
        op.add_column(table, _tenant())
    op.add_column("jobs", sa.Column("submitted_by", sa.Text(), nullable=True))
    op.create_index("jobs_tenant_created", "jobs", ["tenant", sa.text("created_at DESC")])
    for table, column in KEYED_BY_NAME.items():
        op.drop_constraint(f"{table}_pkey", table, type_="primary")
        op.create_primary_key(f"{table}_pkey", table, ["tenant", column])


def downgrade() -> None:
    # Only the default tenant's rows fit the old keys; the others' go.
    for table, column in KEYED_BY_NAME.items():
        op.execute(f"DELETE FROM {table} WHERE tenant <> 'default'")
        op.drop_constraint(f"{table}_pkey", table, type_="primary")
        op.create_primary_key(f"{table}_pkey", table, [column])
    op.drop_index("jobs_tenant_created", table_name="jobs")
    op.drop_column("jobs", "submitted_by")
    for table in OWNED:
        op.drop_column(table, "tenant")
