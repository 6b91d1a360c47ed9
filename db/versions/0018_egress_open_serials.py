"""egress: the requests a job has open are their serial numbers, not a count

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-08 12:00:00.000000

Tower's yes to the egress proxy gives each request a serial (the job's count of allowed
requests) signed into the tag squid reports with its end (tower/egress/tags.py). The job's
open requests are now those serials: an end closes its own request once, and a replayed
or duplicated end closes nothing. The counts open at the upgrade are dropped (their ends,
which carry no tag, would be refused anyway).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "job_egress",
        sa.Column(
            "open_serials",
            ARRAY(sa.Integer()),
            server_default=sa.text("'{}'::integer[]"),
            nullable=False,
        ),
    )
    op.drop_column("job_egress", "open_requests")


def downgrade() -> None:
    op.add_column(
        "job_egress",
        sa.Column("open_requests", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    op.execute("UPDATE job_egress SET open_requests = cardinality(open_serials)")
    op.drop_column("job_egress", "open_serials")
