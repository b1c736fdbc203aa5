"""models everywhere: a model's task; runs, job runs and skew reports name their model

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 05:25:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision: add the columns, fill them from the model versions, then require them."""
    op.add_column(
        "model_versions",
        sa.Column("task", sa.Text(), server_default=sa.text("'classification'"), nullable=False),
        schema="tandem",
    )
    op.add_column("prediction_runs", sa.Column("model_name", sa.Text(), nullable=True), schema="tandem")
    op.execute(
        "UPDATE tandem.prediction_runs r SET model_name = v.model_name "
        "FROM tandem.model_versions v WHERE v.version = r.model_version"
    )
    op.alter_column("prediction_runs", "model_name", nullable=False, schema="tandem")
    op.create_index(
        op.f("ix_prediction_runs_model_name_status"),
        "prediction_runs",
        ["model_name", "status"],
        unique=False,
        schema="tandem",
    )
    op.add_column("job_runs", sa.Column("model_name", sa.Text(), nullable=True), schema="tandem")
    op.add_column("skew_reports", sa.Column("model_name", sa.Text(), nullable=True), schema="tandem")
    op.execute(
        "UPDATE tandem.skew_reports s SET model_name = v.model_name "
        "FROM tandem.model_versions v WHERE v.version = s.model_version"
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_column("skew_reports", "model_name", schema="tandem")
    op.drop_column("job_runs", "model_name", schema="tandem")
    op.drop_index(op.f("ix_prediction_runs_model_name_status"), table_name="prediction_runs", schema="tandem")
    op.drop_column("prediction_runs", "model_name", schema="tandem")
    op.drop_column("model_versions", "task", schema="tandem")
