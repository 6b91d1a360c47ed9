"""uploads and upload_chunks: files and archives for jobs' workspaces

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 06:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "uploads",
        sa.Column("upload_id", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("filename", sa.Text(), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.Text(), nullable=False),
        sa.Column("entries", sa.Integer(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('file', 'tar', 'tar.gz', 'zip')", name="uploads_kind_valid"),
        sa.PrimaryKeyConstraint("upload_id"),
    )
    op.create_index("uploads_expires_at", "uploads", ["expires_at"])
    op.create_table(
        "upload_chunks",
        sa.Column("upload_id", sa.Text(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["upload_id"], ["uploads.upload_id"], name="upload_chunks_upload_fk", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("upload_id", "seq"),
    )


def downgrade() -> None:
    op.drop_table("upload_chunks")
    op.drop_index("uploads_expires_at", table_name="uploads")
    op.drop_table("uploads")
