"""run kind: a prediction run is a nightly `batch` run or a `stream` re-score of changed entities

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 11:45:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision: every existing run is a batch run."""
    op.add_column(
        "prediction_runs",
        sa.Column("kind", sa.Text(), server_default=sa.text("'batch'"), nullable=False),
        schema="tandem",
    )
    op.create_index(
        op.f("ix_prediction_runs_model_name_kind_status"),
        "prediction_runs",
        ["model_name", "kind", "status"],
        unique=False,
        schema="tandem",
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index(
        op.f("ix_prediction_runs_model_name_kind_status"), table_name="prediction_runs", schema="tandem"
    )
    op.drop_column("prediction_runs", "kind", schema="tandem")
