"""upload and artifact chunks kept in their heap pages

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07 06:50:00.000000

Chunks are now written as rows of 8000 bytes (tower/db/chunks.py). With the default
toast_tuple_target (about 2 KB) each would still go to TOAST, cut in four; at 8160 (the
most PostgreSQL allows) a row of 8000 bytes stays in its page. EXTERNAL storage stays:
a larger value (a 1 MiB chunk written by an older replica during a rolling upgrade) is
still moved out of line, uncompressed, as before.
"""

from __future__ import annotations

from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

CHUNK_TABLES = ("upload_chunks", "job_artifact_chunks")


def upgrade() -> None:
    for table in CHUNK_TABLES:
        op.execute(f"ALTER TABLE {table} SET (toast_tuple_target = 8160)")


def downgrade() -> None:
    for table in CHUNK_TABLES:
        op.execute(f"ALTER TABLE {table} RESET (toast_tuple_target)")
