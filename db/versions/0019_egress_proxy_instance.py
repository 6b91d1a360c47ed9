"""egress: which proxy instance a job's open requests were let through

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-08 13:00:00.000000

The egress proxy says, with every question, which instance of it asks (its container's
host name and start time). A job's open requests belong to the instance recorded with
them: a question from another instance (the proxy restarted, and every request it held
ended with it, their log lines never to come) closes them before counting its own, so a
restart no longer leaves requests counted open against EGRESS_MAX_CONNECTIONS.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("job_egress", sa.Column("proxy_instance", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("job_egress", "proxy_instance")
