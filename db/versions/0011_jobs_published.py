"""jobs.published: what tower pushed for a repository job's output

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 06:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("published", postgresql.JSONB(), nullable=True))


def downgrade() -> None:
    op.drop_column("jobs", "published")
