"""artifact signature: an HMAC of each model version, made with a key kept outside PostgreSQL

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 06:10:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision: a nullable column (existing versions stay unsigned until `tandem models sign`)."""
    op.add_column(
        "model_versions", sa.Column("artifact_signature", sa.Text(), nullable=True), schema="tandem"
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_column("model_versions", "artifact_signature", schema="tandem")
