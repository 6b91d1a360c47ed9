"""jobs.ran_by: the replica that claimed a job's latest attempt

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 07:45:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("ran_by", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("jobs", "ran_by")
