"""configs.shipped_content: shipped configs follow upgrades until an operator edits them

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 18:15:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# The configs shipped before this revision. A row of one of these names that was never
# written through the API (PUT sets updated_at) still holds what tower seeded, so it may
# follow the shipped file from now on; any other row is treated as the operator's.
SHIPPED_BEFORE = {
    "engine": ("aider", "claude-code", "codex", "gemini", "opencode"),
    "profile": ("code-review", "default", "researcher"),
    "template": ("claude-md", "code-review", "default", "researcher"),
}


def upgrade() -> None:
    op.add_column("configs", sa.Column("shipped_content", sa.Text(), nullable=True))
    for kind, names in SHIPPED_BEFORE.items():
        op.execute(
            sa.text(
                "UPDATE configs SET shipped_content = content"
                " WHERE kind = :kind AND name = ANY(:names) AND updated_at = created_at"
            ).bindparams(kind=kind, names=list(names))
        )


def downgrade() -> None:
    op.drop_column("configs", "shipped_content")
