"""upload and artifact chunks stored without compression attempts

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 06:20:00.000000

A chunk is 1 MiB of a user's file: mostly compressed already (archives, binaries), so
PostgreSQL's attempt to compress each one (the default EXTENDED storage) cost CPU on
every write and read for nothing. EXTERNAL keeps them out of line, uncompressed.
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

CHUNK_COLUMNS = (("upload_chunks", "data"), ("job_artifact_chunks", "data"))


def upgrade() -> None:
    for table, column in CHUNK_COLUMNS:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET STORAGE EXTERNAL")


def downgrade() -> None:
    for table, column in CHUNK_COLUMNS:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET STORAGE EXTENDED")
