"""stream ingestion: keys of the events `tandem stream` appended offline (replays are skipped)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 11:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision: the table of seen event keys (empty)."""
    op.create_table(
        "stream_seen",
        sa.Column("event_key", sa.Uuid(), nullable=False),
        sa.Column("push_source", sa.Text(), nullable=False),
        sa.Column("broker", sa.Text(), nullable=False),
        sa.Column("stream", sa.Text(), nullable=False),
        sa.Column("message_id", sa.Text(), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("event_key", name=op.f("pk_stream_seen")),
        schema="tandem",
    )
    op.create_index(
        "ix_stream_seen_seen_at",
        "stream_seen",
        ["seen_at"],
        unique=False,
        schema="tandem",
        postgresql_using="brin",
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index(
        "ix_stream_seen_seen_at", table_name="stream_seen", schema="tandem", postgresql_using="brin"
    )
    op.drop_table("stream_seen", schema="tandem")
